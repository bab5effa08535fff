-- Durable push delivery (C-S API "Push Notifications"): each pusher's place in
-- event_push_actions. Rows at or below it were handled (sent, or skipped because read or
-- undeliverable), so after a restart a pusher resumes right after them: nothing is sent
-- twice and nothing is dropped.
ALTER TABLE pushers ADD COLUMN last_stream_ordering BIGINT NOT NULL DEFAULT 0;
-- When delivery of the row after last_stream_ordering first failed (NULL while delivering
-- fine): retries back off from it, and a notification failing for a day is skipped.
ALTER TABLE pushers ADD COLUMN failing_since BIGINT;
-- The device that set the pusher: logging that device out removes it, as the user expects
-- of a phone they signed out of.
ALTER TABLE pushers ADD COLUMN device_id TEXT;
