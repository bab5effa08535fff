-- /sync and filters (C-S API "Syncing", "Filtering").

-- Filters a user uploaded; filter_id counts up per user. filter_hash (SHA-256 of the canonical
-- JSON) finds a re-upload of the same filter; indexing the JSON itself would fail on
-- PostgreSQL for filters larger than a btree entry.
CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_hash TEXT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
CREATE INDEX user_filters_hash ON user_filters (user_id, filter_hash);

-- Incremental /sync reads the syncing user's own membership changes since its token: rooms
-- joined, invited to or left. Partial on the literal type like current_state_members.
CREATE INDEX current_state_delta_stream_members
    ON current_state_delta_stream (state_key, stream_ordering)
    WHERE type = 'm.room.member';
