-- Inbound transactions (S-S API PUT /send/{txnId}): the answer to each, per origin, so a
-- retried transaction is answered the same without being processed again.
CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_received ON federation_inbound_txns (received_ts);
