-- name: UpsertSecret :one
-- A new version of a secret: version is the stored one plus one (1 for a
-- new name). The caller sealed the value for that version.
INSERT INTO secrets (name, version, key_id, wrapped_key, ciphertext, created_at, updated_at, updated_by)
VALUES (@name, @version, @key_id, @wrapped_key, @ciphertext, @now, @now, @updated_by)
ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, key_id = EXCLUDED.key_id, wrapped_key = EXCLUDED.wrapped_key,
    ciphertext = EXCLUDED.ciphertext, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by
RETURNING name, version, created_at, updated_at, updated_by;

-- name: SecretVersionForUpdate :one
SELECT version FROM secrets WHERE name = @name FOR UPDATE;

-- name: LastAuditedVersion :one
-- The highest version a name ever had, deleted ones included.
SELECT coalesce(max(version), 0)::integer FROM secret_audit WHERE name = @name AND operation = 'set';

-- name: ListSecrets :many
SELECT name, version, created_at, updated_at, updated_by FROM secrets ORDER BY name;

-- name: SecretsByNames :many
SELECT name, version, key_id, wrapped_key, ciphertext FROM secrets WHERE name = ANY (@names::text[]);

-- name: SecretNamesExisting :many
SELECT name FROM secrets WHERE name = ANY (@names::text[]);

-- name: AllSecretsForUpdate :many
SELECT name, version, key_id, wrapped_key, ciphertext FROM secrets ORDER BY name FOR UPDATE;

-- name: RewrapSecret :exec
UPDATE secrets SET key_id = @key_id, wrapped_key = @wrapped_key WHERE name = @name;

-- name: DeleteSecret :one
DELETE FROM secrets WHERE name = @name RETURNING version;

-- name: InsertSecretAudit :exec
INSERT INTO secret_audit (at, name, operation, version, job_id, attempt, worker_id, actor)
SELECT @at, unnest(@names::text[]), @operation, unnest(@versions::integer[]), sqlc.narg('job_id')::uuid, @attempt, @worker_id, @actor;

-- name: ListSecretAudit :many
SELECT at, name, operation, version, job_id, attempt, worker_id, actor FROM (
    SELECT * FROM secret_audit WHERE name = @name ORDER BY id DESC LIMIT @max
) newest ORDER BY id;
