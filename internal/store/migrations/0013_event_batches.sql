-- Events are stored one row per publish (the events one statement of a
-- transaction inserts), not one row per event: a claim of 200 jobs wrote
-- 200 heap rows and 400 index entries for its JobAssigned events, and the
-- bus read them back row by row. Each event keeps its own id, type,
-- aggregate and payload; the view "events" lists them one per row.
--
-- Ids: first_id comes from a sequence that steps by 65536, and the events
-- of a row are first_id, first_id + 1, ... (at most 65536 per row), so ids
-- stay unique and ordered within a transaction as before, and the rows'
-- (xid, first_id) order is the events' (xid, id) order. Existing events
-- keep their ids: each becomes a row of one event.
CREATE SEQUENCE event_ids INCREMENT BY 65536 MINVALUE 1;

CREATE TABLE event_batches (
    first_id        bigint PRIMARY KEY DEFAULT nextval('event_ids'),
    xid             xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    types           text[] NOT NULL,
    aggregate_kinds text[] NOT NULL,
    aggregate_ids   text[] NOT NULL,
    correlation_ids text[] NOT NULL,
    payloads        bytea[] NOT NULL,
    CONSTRAINT event_batches_size CHECK (
        cardinality(types) BETWEEN 1 AND 65536
        AND cardinality(aggregate_kinds) = cardinality(types)
        AND cardinality(aggregate_ids) = cardinality(types)
        AND cardinality(correlation_ids) = cardinality(types)
        AND cardinality(payloads) = cardinality(types))
);
ALTER SEQUENCE event_ids OWNED BY event_batches.first_id;
-- Large batches go out of line uncompressed: compressing them cost more
-- CPU than the bytes it saves on a local disk.
ALTER TABLE event_batches
    ALTER types SET STORAGE EXTERNAL, ALTER aggregate_kinds SET STORAGE EXTERNAL,
    ALTER aggregate_ids SET STORAGE EXTERNAL, ALTER correlation_ids SET STORAGE EXTERNAL,
    ALTER payloads SET STORAGE EXTERNAL;

INSERT INTO event_batches (first_id, xid, created_at, types, aggregate_kinds, aggregate_ids, correlation_ids, payloads)
SELECT id, xid, created_at, ARRAY[type], ARRAY[aggregate_kind], ARRAY[aggregate_id], ARRAY[correlation_id], ARRAY[payload]
FROM events;
SELECT setval('event_ids', coalesce((SELECT max(id) FROM events), 0) + 1, false);

DROP TABLE events;
CREATE INDEX event_batches_order_idx ON event_batches (xid, first_id);
CREATE TRIGGER events_notify AFTER INSERT ON event_batches FOR EACH STATEMENT EXECUTE FUNCTION hodei_events_notify();

CREATE VIEW events AS
SELECT b.first_id + e.n - 1 AS id, b.xid, e.type, e.aggregate_kind, e.aggregate_id, e.correlation_id, b.created_at, e.payload
FROM event_batches b,
     unnest(b.types, b.aggregate_kinds, b.aggregate_ids, b.correlation_ids, b.payloads)
         WITH ORDINALITY AS e (type, aggregate_kind, aggregate_id, correlation_id, payload, n);
