-- Core room storage: events, the DAG, auth edges, state groups, current state, memberships.
-- Shared by SQLite and PostgreSQL; keep to the common dialect.

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    created_ts BIGINT NOT NULL
);

-- stream_ordering: the /sync position; positive for events in the live timeline, negative for
-- outliers and backfilled events, which never appear in a live stream.
-- depth: the topological ordering used for pagination, with stream_ordering as tie-break.
-- state_group_before/after: the state before the event and after it (S(E) and S'(E)).
CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    received_ts BIGINT NOT NULL,
    outlier BOOLEAN NOT NULL,
    rejected_reason TEXT,
    soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
    redacts TEXT,
    state_group_before BIGINT,
    state_group_after BIGINT,
    json TEXT NOT NULL
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_ordering);
CREATE INDEX events_redacts ON events (redacts) WHERE redacts IS NOT NULL;

-- DAG edges (prev_events) and auth edges (auth_events).
CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_id)
);

CREATE TABLE event_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- State groups: a full snapshot (prev_group NULL) or a delta on prev_group. A delta entry with
-- a NULL event_id removes that key (state resolution can drop a key). delta_depth bounds the
-- chain so reading a group never walks far.
CREATE TABLE state_groups (
    id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    delta_depth INTEGER NOT NULL
);

CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (state_group, type, state_key)
);

-- The resolved current state of each room, with the membership of member events inlined
-- so the membership index below needs no join.
CREATE TABLE current_state_events (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_members ON current_state_events (state_key, membership)
    WHERE type = 'm.room.member';

-- Every change to current state, by stream position: /sync reads state and membership
-- changes from here without diffing snapshots. event_id NULL means the key was removed.
CREATE TABLE current_state_delta_stream (
    stream_ordering BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    prev_event_id TEXT
);
CREATE INDEX current_state_delta_stream_pos ON current_state_delta_stream (stream_ordering);
CREATE INDEX current_state_delta_stream_room ON current_state_delta_stream (room_id, stream_ordering);

-- Membership history: every membership event, current or not.
CREATE TABLE room_memberships (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    membership TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, room_id);
