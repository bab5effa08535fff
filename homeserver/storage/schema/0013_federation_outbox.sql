-- Outbound federation (S-S API "Transactions"): what each destination has yet to receive,
-- kept until it acknowledges a transaction holding it, so a restart loses nothing.
-- Exactly one of event_id (a local PDU) and edu_json (an EDU) is set.
CREATE TABLE federation_outbox (
    destination TEXT NOT NULL,
    queue_id BIGINT NOT NULL,
    event_id TEXT,
    edu_json TEXT,
    PRIMARY KEY (destination, queue_id)
);
CREATE UNIQUE INDEX federation_outbox_event ON federation_outbox (destination, event_id)
    WHERE event_id IS NOT NULL;

-- The last event stream position whose PDUs are queued above: the sender follows the event
-- stream from here, so an event that committed just before a crash is still queued after it.
CREATE TABLE federation_sender_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_ordering BIGINT NOT NULL
);

-- Back-off per destination that failed: retried no sooner than retry_at_ts.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    retry_at_ts BIGINT NOT NULL,
    retry_interval_ms BIGINT NOT NULL
);
