-- The event ids each counter applied recently, written by the counter's write-behind in the
-- same transaction as counter_values: one row per counter and flush, holding that flush's
-- new ids. After Redis is lost they are loaded back with the value, so an event re-sent with
-- the same id within the namespace's dedupe window still counts once. Rows older than the
-- window are deleted by the counter service.
CREATE TABLE counter_recent_events (
    namespace   TEXT        NOT NULL,
    entity_id   TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    event_ids   TEXT[]      NOT NULL
);
CREATE INDEX counter_recent_events_by_counter
    ON counter_recent_events (namespace, entity_id, recorded_at);
CREATE INDEX counter_recent_events_by_age ON counter_recent_events (recorded_at);
