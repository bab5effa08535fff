-- Server-side key backups (C-S API "Server-side key backups"). Versions are numbered per user
-- from 1. A deleted version keeps its row (deleted = TRUE, keys gone): a repeated DELETE of it
-- succeeds, as the spec asks, and its number is never handed out again.
-- etag counts the changes to the version's stored keys; auth_data is the JSON object as text.
CREATE TABLE room_key_backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

-- The backed-up key of each megolm session; session_data is the JSON object as text.
CREATE TABLE room_key_backups (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BOOLEAN NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES room_key_backup_versions (user_id, version)
);
