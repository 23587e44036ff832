-- name: InsertEvents :one
-- Inserts a batch of events (at most 65536) as one row in the caller's
-- transaction; their ids are first_id, first_id + 1, ... in order.
INSERT INTO event_batches (types, aggregate_kinds, aggregate_ids, correlation_ids, payloads)
VALUES (@types::text[], @aggregate_kinds::text[], @aggregate_ids::text[], @correlation_ids::text[], @payloads::bytea[])
RETURNING first_id;

-- name: AppendEvents :exec
-- InsertEvents without the ids, so that it can be queued in a batch.
INSERT INTO event_batches (types, aggregate_kinds, aggregate_ids, correlation_ids, payloads)
VALUES (@types::text[], @aggregate_kinds::text[], @aggregate_ids::text[], @correlation_ids::text[], @payloads::bytea[]);

-- name: ReadEvents :many
-- The event rows holding events after the cursor, in (xid, first_id)
-- order, from the row holding the cursor's event when it has events after
-- it (the caller skips those up to the cursor): a row's events are at most
-- 65536 ids from its first_id, so the scan of event_batches_order_idx
-- starts 65536 ids below the cursor and skips the rows that end before it.
-- With them the xmin of the same snapshot: the reader may only pass rows
-- whose xid is below it, since a transaction still running could yet add
-- events before them. ORDER BY names the table's columns: a bare "xid"
-- would be the bigint output column, which the index cannot serve (a sort
-- of the whole table).
SELECT b.first_id, b.xid::text::bigint AS xid, b.types, b.aggregate_kinds, b.aggregate_ids, b.correlation_ids, b.created_at, b.payloads,
       pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin
FROM event_batches b
WHERE (b.xid, b.first_id) > (CAST(sqlc.arg(after_xid)::text AS xid8), (@after_id::bigint) - 65536)
  AND (b.xid > CAST(sqlc.arg(after_xid)::text AS xid8) OR b.first_id + cardinality(b.types) - 1 > @after_id::bigint)
ORDER BY b.xid, b.first_id
LIMIT @max_rows;

-- name: CurrentEventPosition :one
-- The position "now": everything from transactions that finished before
-- the oldest running one is behind it.
SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1)::bigint AS xid;

-- name: EventPosition :one
SELECT r.xid::text::bigint AS xid FROM (
    SELECT b.xid, b.first_id, cardinality(b.types) AS n FROM event_batches b
    WHERE b.first_id <= @id::bigint ORDER BY b.first_id DESC LIMIT 1
) r WHERE @id::bigint < r.first_id + r.n;

-- name: GetEvent :one
SELECT r.first_id, r.xid::text::bigint AS xid, r.types, r.aggregate_kinds, r.aggregate_ids, r.correlation_ids, r.created_at, r.payloads
FROM (
    SELECT b.* FROM event_batches b WHERE b.first_id <= @id::bigint ORDER BY b.first_id DESC LIMIT 1
) r WHERE @id::bigint < r.first_id + cardinality(r.types);

-- name: EnsureCursor :exec
INSERT INTO event_cursors (subscriber, xid, event_id) VALUES (@subscriber, CAST(sqlc.arg(xid)::text AS xid8), @event_id)
ON CONFLICT (subscriber) DO NOTHING;

-- name: GetCursor :one
SELECT xid::text::bigint AS xid, event_id FROM event_cursors WHERE subscriber = @subscriber;

-- name: AdvanceCursor :exec
UPDATE event_cursors SET xid = CAST(sqlc.arg(xid)::text AS xid8), event_id = @event_id, updated_at = now()
WHERE subscriber = @subscriber;

-- name: ParkDeadLetter :exec
INSERT INTO event_dead_letters (subscriber, event_id, attempts, last_error, parked_at)
VALUES (@subscriber, @event_id, @attempts, @last_error, @now)
ON CONFLICT (subscriber, event_id) DO UPDATE
SET attempts = event_dead_letters.attempts + EXCLUDED.attempts, last_error = EXCLUDED.last_error,
    parked_at = EXCLUDED.parked_at, replayed_at = NULL;

-- name: ListDeadLetters :many
SELECT d.id, d.subscriber, d.event_id, d.attempts, d.last_error, d.parked_at,
       e.first_id, e.xid::text::bigint AS xid, e.types, e.aggregate_kinds, e.aggregate_ids, e.correlation_ids, e.created_at, e.payloads
FROM event_dead_letters d
CROSS JOIN LATERAL (
    SELECT b.* FROM event_batches b WHERE b.first_id <= d.event_id ORDER BY b.first_id DESC LIMIT 1
) e
WHERE d.replayed_at IS NULL AND (@subscriber::text = '' OR d.subscriber = @subscriber::text)
  AND d.event_id < e.first_id + cardinality(e.types)
ORDER BY d.id
LIMIT @max_rows;

-- name: TakeDeadLetter :one
UPDATE event_dead_letters SET replayed_at = @now WHERE id = @id AND replayed_at IS NULL
RETURNING subscriber, event_id;

-- name: PruneEvents :one
-- Deletes a batch of old event rows that every subscriber has passed and
-- no pending dead letter refers to; returns the rows and the events
-- deleted.
WITH gone AS (
    DELETE FROM event_batches WHERE first_id IN (
        SELECT b.first_id FROM event_batches b
        WHERE b.created_at < @before
          AND b.xid < (SELECT coalesce(min(c.xid), '0'::xid8) FROM event_cursors c)
          AND NOT EXISTS (SELECT 1 FROM event_dead_letters d
                          WHERE d.event_id >= b.first_id AND d.event_id < b.first_id + cardinality(b.types)
                            AND d.replayed_at IS NULL)
        ORDER BY b.first_id
        LIMIT @max_rows
    )
    RETURNING cardinality(types) AS n
)
SELECT count(*)::bigint AS batches, coalesce(sum(n), 0)::bigint AS events FROM gone;

-- name: CountEventsAfter :one
-- The number of events after a cursor: a subscriber's lag.
SELECT coalesce(sum(CASE WHEN b.xid > CAST(sqlc.arg(after_xid)::text AS xid8) THEN cardinality(b.types)
                         ELSE greatest(0, least(cardinality(b.types), b.first_id + cardinality(b.types) - 1 - @after_id::bigint)) END), 0)::bigint AS lag
FROM event_batches b
WHERE (b.xid, b.first_id) > (CAST(sqlc.arg(after_xid)::text AS xid8), (@after_id::bigint) - 65536);
