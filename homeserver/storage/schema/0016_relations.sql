-- Event relationships (C-S API "Forming relationships between events"): one row per accepted
-- event whose content carries a valid m.relates_to, for /relations, /threads, bundled
-- aggregations and the duplicate-annotation check. Positions are the child's: topological
-- (depth, stream_ordering) as /messages orders the timeline. A redacted child loses its row
-- (the relationship is broken, "Aggregations of child events").
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    -- An m.annotation's `key`; NULL for other relationships.
    aggregation_key TEXT,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    depth BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL
);
-- /relations pages and the per-parent aggregations.
CREATE INDEX event_relations_parent
    ON event_relations (relates_to_id, depth, stream_ordering);
-- The duplicate-annotation check before sending a reaction.
CREATE INDEX event_relations_annotations
    ON event_relations (relates_to_id, sender, aggregation_key)
    WHERE rel_type = 'm.annotation';

-- Thread roots with their latest reply, so /threads reads them ordered by latest activity.
CREATE TABLE threads (
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_depth BIGINT NOT NULL,
    latest_stream BIGINT NOT NULL,
    PRIMARY KEY (room_id, thread_id)
);
CREATE INDEX threads_by_activity ON threads (room_id, latest_depth, latest_stream);
