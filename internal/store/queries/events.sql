-- name: InsertEvents :many
-- Inserts a batch of events in the caller's transaction, in order.
INSERT INTO events (type, aggregate_kind, aggregate_id, correlation_id, payload)
SELECT unnest(@types::text[]), unnest(@aggregate_kinds::text[]), unnest(@aggregate_ids::text[]),
       unnest(@correlation_ids::text[]), unnest(@payloads::bytea[])
RETURNING id;

-- name: AppendEvents :exec
-- InsertEvents without the ids, so that it can be queued in a batch.
INSERT INTO events (type, aggregate_kind, aggregate_id, correlation_id, payload)
SELECT unnest(@types::text[]), unnest(@aggregate_kinds::text[]), unnest(@aggregate_ids::text[]),
       unnest(@correlation_ids::text[]), unnest(@payloads::bytea[]);

-- name: ReadEvents :many
-- Events after the cursor in (xid, id) order, with the xmin of the same
-- snapshot: the reader may only pass events whose xid is below it, since a
-- transaction still running could yet add an event before them. ORDER BY
-- names the table's columns: a bare "xid" would be the bigint output
-- column, which events_order_idx cannot serve (a sort of the whole table).
SELECT id, xid::text::bigint AS xid, type, aggregate_kind, aggregate_id, correlation_id, created_at, payload,
       pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin
FROM events
WHERE (events.xid, events.id) > (CAST(sqlc.arg(after_xid)::text AS xid8), @after_id::bigint)
ORDER BY events.xid, events.id
LIMIT @max_events;

-- name: CurrentEventPosition :one
-- The position "now": everything from transactions that finished before
-- the oldest running one is behind it.
SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1)::bigint AS xid;

-- name: EventPosition :one
SELECT xid::text::bigint AS xid FROM events WHERE id = @id;

-- name: GetEvent :one
SELECT id, xid::text::bigint AS xid, type, aggregate_kind, aggregate_id, correlation_id, created_at, payload
FROM events WHERE id = @id;

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
       e.xid::text::bigint AS xid, e.type, e.aggregate_kind, e.aggregate_id, e.correlation_id, e.created_at, e.payload
FROM event_dead_letters d JOIN events e ON e.id = d.event_id
WHERE d.replayed_at IS NULL AND (@subscriber::text = '' OR d.subscriber = @subscriber::text)
ORDER BY d.id
LIMIT @max_rows;

-- name: TakeDeadLetter :one
UPDATE event_dead_letters SET replayed_at = @now WHERE id = @id AND replayed_at IS NULL
RETURNING subscriber, event_id;

-- name: PruneEvents :execrows
-- Deletes a batch of old events that every subscriber has passed and no
-- pending dead letter refers to.
DELETE FROM events WHERE id IN (
    SELECT e.id FROM events e
    WHERE e.created_at < @before
      AND e.xid < (SELECT coalesce(min(c.xid), '0'::xid8) FROM event_cursors c)
      AND NOT EXISTS (SELECT 1 FROM event_dead_letters d WHERE d.event_id = e.id AND d.replayed_at IS NULL)
    ORDER BY e.id
    LIMIT @max_rows
);

-- name: CountEventsAfter :one
-- The number of events after a cursor: a subscriber's lag.
SELECT count(*)::bigint AS lag FROM events
WHERE (xid, id) > (CAST(sqlc.arg(after_xid)::text AS xid8), @after_id::bigint);
