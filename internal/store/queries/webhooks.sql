-- name: InsertWebhook :one
-- No row when a webhook of that name exists.
INSERT INTO webhooks (name, url, types, labels, secret, max_attempts, created_at)
VALUES (@name, @url, @types::text[], @labels::jsonb, @secret, @max_attempts, @created_at)
ON CONFLICT (name) DO NOTHING
RETURNING id;

-- name: StartWebhookCursor :exec
-- The cursor of a new webhook's subscriber, at its WebhookCreated event
-- (published by the same transaction): the webhook is sent what comes
-- after. A cursor left by a removed webhook of the same name is replaced.
INSERT INTO event_cursors (subscriber, xid, event_id) VALUES (@subscriber, pg_current_xact_id(), @event_id)
ON CONFLICT (subscriber) DO UPDATE SET xid = EXCLUDED.xid, event_id = EXCLUDED.event_id, updated_at = now();

-- name: ListWebhooks :many
SELECT id, name, url, types, labels, secret, max_attempts, created_at FROM webhooks ORDER BY name;

-- name: GetWebhook :one
SELECT id, name, url, types, labels, secret, max_attempts, created_at FROM webhooks WHERE name = @name;

-- name: DeleteWebhook :one
DELETE FROM webhooks WHERE name = @name RETURNING id;

-- name: DeleteSubscriberState :exec
-- The cursor and the dead letters of a subscriber.
WITH cursors AS (DELETE FROM event_cursors c WHERE c.subscriber = @subscriber)
DELETE FROM event_dead_letters d WHERE d.subscriber = @subscriber;

-- name: DeleteOrphanWebhookState :one
-- The cursors and dead letters of webhook subscribers whose webhook is
-- gone: what a subscriber still stopping wrote after its webhook was
-- removed. Returns how many rows were deleted.
WITH cursors AS (
    DELETE FROM event_cursors c
    WHERE c.subscriber LIKE 'webhook:%'
      AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE 'webhook:' || w.name = c.subscriber)
    RETURNING 1
), letters AS (
    DELETE FROM event_dead_letters d
    WHERE d.subscriber LIKE 'webhook:%'
      AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE 'webhook:' || w.name = d.subscriber)
    RETURNING 1
)
SELECT ((SELECT count(*) FROM cursors) + (SELECT count(*) FROM letters))::bigint AS deleted;

-- name: JobHasLabels :one
-- Whether the job exists and its spec has every label of @labels.
SELECT EXISTS (SELECT 1 FROM jobs WHERE id = @id AND labels @> @labels::jsonb);

-- name: PendingDeadLetters :many
-- The dead letters of a subscriber not replayed yet, oldest first.
SELECT id, event_id FROM event_dead_letters WHERE subscriber = @subscriber AND replayed_at IS NULL ORDER BY id;
