-- Send-to-device messages (C-S API "Send-to-Device messaging"): each device's inbox, kept
-- until the device acknowledges it by syncing with a token past the message's stream_id.
-- One send has one stream_id for all its recipients; a device receives at most one message
-- per send, hence the key. Deleting a device drops its inbox.
CREATE TABLE device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- The highest stream position handed out. Delivered messages are deleted, so MAX(stream_id)
-- of the inbox could fall below a position a client's token already holds; a reused position
-- would then count as acknowledged before it was ever sent.
CREATE TABLE to_device_stream (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position BIGINT NOT NULL
);
INSERT INTO to_device_stream (id, position) VALUES (1, 0);

-- C-S API "Transaction identifiers": PUT /sendToDevice/{type}/{txnId} is idempotent per
-- sending device.
CREATE TABLE to_device_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
