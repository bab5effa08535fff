-- Push rules and notification counts (C-S API "Push Notifications").
-- A user's own rules, per kind; the higher `priority`, the more important within its kind.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    conditions TEXT NOT NULL,
    pattern TEXT,
    actions TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, kind, rule_id)
);
-- What a user changed of a server-default rule: NULL keeps the default's value.
CREATE TABLE push_rule_default_changes (
    user_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions TEXT,
    PRIMARY KEY (user_id, rule_id)
);
-- One row per (local user, event) that notified or highlighted, written in the transaction
-- that stores the event, so its count shows in the same /sync as the event. `thread_id` is
-- the thread root's event ID or 'main'; read receipts set `is_read`.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    notif BOOLEAN NOT NULL,
    highlight BOOLEAN NOT NULL,
    actions TEXT NOT NULL,
    ts BIGINT NOT NULL,
    is_read BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, event_id)
);
-- /sync's counts and a receipt's clearing read only unread rows.
CREATE INDEX event_push_actions_unread
    ON event_push_actions (user_id, room_id, thread_id, stream_ordering) WHERE NOT is_read;
-- /notifications pages through a user's rows, newest first.
CREATE INDEX event_push_actions_by_user ON event_push_actions (user_id, stream_ordering);
-- Pushers (C-S API "Pushers"): where to send a user's notifications. One (app_id, pushkey)
-- may serve several users only when set with `append`.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    pushkey_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_by_key ON pushers (app_id, pushkey);
