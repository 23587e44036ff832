-- name: SeedProvider :exec
-- Registers a configured provider; settings changed through the API since
-- are kept, what the code decides (kind, labels, images) is refreshed.
INSERT INTO providers (name, kind, enabled, max_workers, idle_timeout_ms, ephemeral, labels, any_image, updated_at)
VALUES (@name, @kind, true, @max_workers, @idle_timeout_ms, @ephemeral, @labels, @any_image, @now)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, labels = EXCLUDED.labels, any_image = EXCLUDED.any_image;

-- name: ListProviders :many
SELECT * FROM providers ORDER BY name;

-- name: GetProvider :one
SELECT * FROM providers WHERE name = @name;

-- name: UpdateProviderSettings :one
UPDATE providers SET enabled = @enabled, max_workers = @max_workers, idle_timeout_ms = @idle_timeout_ms,
    ephemeral = @ephemeral, updated_at = @now
WHERE name = @name
RETURNING *;

-- name: SetProviderHealth :exec
UPDATE providers SET healthy = @healthy, unhealthy_since = sqlc.narg(unhealthy_since), health_message = @health_message, updated_at = @now
WHERE name = @name;

-- name: ProviderWorkers :many
-- A provider's live workers with their load and when they last finished
-- a job (or connected), for scale-down.
SELECT w.id, w.state, w.image, w.labels, w.slots, w.handle, w.created_at,
       (SELECT count(*) FROM jobs j WHERE j.state IN ('assigned', 'running') AND j.attempt_worker_id = w.id)::integer AS running,
       a.n::integer AS attempts,
       coalesce(a.last, w.last_seen, w.created_at)::timestamptz AS idle_since
FROM workers w
CROSS JOIN LATERAL (SELECT count(*) AS n, max(finished_at) AS last FROM attempts WHERE worker_id = w.id) a
WHERE w.provider = @provider AND w.state IN ('provisioning', 'connected', 'draining', 'disconnected')
ORDER BY w.created_at;

-- name: DrainWorker :execrows
UPDATE workers SET state = 'draining', updated_at = @now WHERE id = @id AND state = 'connected';

-- name: UndrainWorker :exec
UPDATE workers SET state = 'connected', updated_at = @now WHERE id = @id AND state = 'draining';

-- name: CountRunningAttempts :one
SELECT count(*)::integer FROM jobs WHERE state IN ('assigned', 'running') AND attempt_worker_id = @worker_id::uuid;

-- name: InstallationID :one
-- The installation id, created on first use.
WITH created AS (
    INSERT INTO installation (id) VALUES (gen_random_uuid()::text)
    ON CONFLICT (singleton) DO NOTHING
    RETURNING id
)
SELECT id FROM created
UNION ALL
SELECT id FROM installation
LIMIT 1;
