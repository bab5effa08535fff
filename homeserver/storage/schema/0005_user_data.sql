-- Per-user data outside the room DAG: account data and room tags (C-S API "Client Config",
-- "Room Tagging"), receipts ("Receipts") and presence ("Presence"). Profiles are the
-- displayname/avatar_url columns of `users`. Each table carries a stream position of its own
-- (stream_id), a slot of the /sync token, so /sync reads what changed between two tokens.

-- room_id '' holds global account data; otherwise the data belongs to that room. Room tags
-- are the `m.tag` room account data. content is the JSON object as text.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);

-- The latest receipt per (room, type, user, thread); thread_id '' is an unthreaded receipt
-- (C-S API "Threaded read receipts"). A newer receipt replaces the row and its stream_id.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);

-- The presence state a user (or the server's idle timer) last set.
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_id);
