-- Refresh token rotation (C-S API "Refreshing access tokens"): a refresh issues a new access
-- and refresh token, and the old pair stays valid until the client first uses the new access
-- token or the new refresh token, so a client that lost the /refresh response can repeat it.

-- The refresh token issued together with this access token (NULL: none). The two are revoked
-- together.
ALTER TABLE access_tokens ADD COLUMN refresh_token_hash TEXT;
-- The refresh token this pair replaced, still valid until the pair is first used; that use
-- revokes it (with its access token) and clears this column. Carried in the cached token
-- owner, so the check costs requests nothing once it is NULL.
ALTER TABLE access_tokens ADD COLUMN replaces_refresh_hash TEXT;

CREATE INDEX access_tokens_refresh ON access_tokens (refresh_token_hash)
    WHERE refresh_token_hash IS NOT NULL;
CREATE INDEX access_tokens_replaces ON access_tokens (replaces_refresh_hash)
    WHERE replaces_refresh_hash IS NOT NULL;

-- Pair the tokens issued before this migration: a device then had at most one refresh token,
-- issued with its one expiring access token.
UPDATE access_tokens SET refresh_token_hash = (
    SELECT MAX(r.token_hash) FROM refresh_tokens r
    WHERE r.user_id = access_tokens.user_id AND r.device_id = access_tokens.device_id
) WHERE expires_ts IS NOT NULL;
