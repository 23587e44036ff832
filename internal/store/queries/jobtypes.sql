-- name: UpsertJobType :exec
INSERT INTO job_types (name, retry, updated_at) VALUES (@name, @retry::jsonb, @updated_at)
ON CONFLICT (name) DO UPDATE SET retry = EXCLUDED.retry, updated_at = EXCLUDED.updated_at;

-- name: GetJobType :one
SELECT name, retry, updated_at FROM job_types WHERE name = @name;

-- name: ListJobTypes :many
SELECT name, retry, updated_at FROM job_types ORDER BY name;

-- name: DeleteJobType :one
DELETE FROM job_types WHERE name = @name RETURNING name;

-- name: JobTypesByNames :many
-- The retry defaults of the types a batch of submitted specs names.
SELECT name, retry FROM job_types WHERE name = ANY (@names::text[]);
