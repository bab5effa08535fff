-- Room extras for the Client-Server API: aliases, send transaction IDs, forgotten rooms and
-- the published room directory flag. Shared by SQLite and PostgreSQL.

-- C-S API "Room aliases": #alias:our.server -> room. creator may delete it (as may admins and
-- users with power to change m.room.canonical_alias).
CREATE TABLE room_aliases (
    room_alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- C-S API "Transaction identifiers": PUT .../send/{type}/{txnId} and .../redact/{id}/{txnId}
-- are idempotent per device; the same txnId from the same device gives the same event.
-- A transaction ID is scoped to the device and the endpoint's path (C-S API "Transaction
-- identifiers"): `scope` is the path without the transaction ID.
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);
-- unsigned.transaction_id when serving the sender's own events.
CREATE INDEX event_txn_ids_event ON event_txn_ids (event_id);

-- C-S API "Leaving rooms": a forgotten room stays forgotten while the user's membership is
-- the one they forgot it with; any later membership event (re-join, re-invite, knock) ends it.
CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    membership_event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

-- C-S API "Published room directory": rooms listed there (createRoom visibility=public).
CREATE TABLE room_directory (
    room_id TEXT PRIMARY KEY,
    visibility TEXT NOT NULL
);

-- GET /rooms/{roomId}/timestamp_to_event: the live event nearest a time.
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);
