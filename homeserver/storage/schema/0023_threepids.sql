-- Third-party identifiers bound to accounts (C-S API "Adding Account Administrative Contact
-- Information"): email addresses a user proved they receive mail at. An address belongs to
-- one account at most; addresses are stored in their canonical form (homeserver/identifiers.py).
CREATE TABLE user_threepids (
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    user_id TEXT NOT NULL,
    validated_ts BIGINT NOT NULL,
    added_ts BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);
-- Validation sessions started by POST /account/3pid/email/requestToken. A session lasts 24
-- hours after it last changed (created, mail resent, validated), as identity servers' do;
-- expired rows are deleted whenever a session starts, by the index on modified_ts.
CREATE TABLE threepid_validation_sessions (
    session_id TEXT PRIMARY KEY,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    last_send_attempt BIGINT NOT NULL,
    next_link TEXT,
    modified_ts BIGINT NOT NULL,
    validated_ts BIGINT
);
CREATE INDEX threepid_validation_sessions_secret
    ON threepid_validation_sessions (client_secret, medium, address);
CREATE INDEX threepid_validation_sessions_modified ON threepid_validation_sessions (modified_ts);
-- The tokens mailed for a session, one per mail sent (an earlier mail's link keeps working),
-- as SHA-256 hashes: a leaked database must not let anyone validate an address.
CREATE TABLE threepid_validation_tokens (
    session_id TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    PRIMARY KEY (session_id, token_hash)
);
-- Email pushers set before this could mail any address their user typed: none of those
-- addresses was proved, so they go (a user binds an address and sets the pusher again).
DELETE FROM pushers WHERE kind = 'email';
