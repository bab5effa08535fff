-- OpenID tokens (C-S API "OpenID", S-S API "OpenID"): a user proves who they are to a third
-- party, which exchanges the token at /_matrix/federation/v1/openid/userinfo. Stored as SHA-256
-- hashes like access tokens (0002): a leaked database must not let anyone pass as a user.
-- Expired rows are never answered and are deleted whenever a new token is issued, by the index
-- on expires_ts.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
