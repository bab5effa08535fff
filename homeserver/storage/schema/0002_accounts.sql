-- Accounts, devices and tokens (Client-Server API "Client Authentication").
-- Tokens are stored as SHA-256 hashes: a leaked database does not leak usable tokens.

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated BOOLEAN NOT NULL DEFAULT FALSE,
    displayname TEXT,
    avatar_url TEXT,
    created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- expires_ts NULL: the token does not expire (clients that do not support refresh tokens).
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

-- Tokens an operator hands out to let people register (C-S API "Token-authenticated
-- registration"). uses_allowed NULL: unlimited; expiry_ts NULL: never expires.
CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_ts BIGINT
);
