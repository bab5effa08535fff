-- Other servers' signing keys (S2S "Retrieving server keys"), fetched by the keyring.
--
-- The newest key response of each server, exactly as the server signed it (other signatures
-- removed): what this server serves as a notary (POST /_matrix/key/v2/query), adding its own
-- signature. valid_until_ts is the response's own, uncapped; fetched_ts says when it arrived,
-- so a notary can refresh after half the response's lifetime as keys_server.yaml asks.
CREATE TABLE server_key_responses (
    server_name TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);

-- Every verify key seen in a checked response, kept after the server stops listing it so that
-- signatures on old events still verify. A current key's valid_until_ts is the response's,
-- capped at 7 days after it arrived (room versions 5+ enforce it); an old key's is its
-- expired_ts, which no later response can extend. Looked up by the primary key.
CREATE TABLE server_verify_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    PRIMARY KEY (server_name, key_id)
);
