-- name: InsertToken :one
-- No row when a token of that name exists (revoked ones included).
INSERT INTO api_tokens (id, name, hash, scopes, created_at, expires_at)
VALUES (@id, @name, @hash, @scopes::text[], @created_at, sqlc.narg(expires_at))
ON CONFLICT (name) DO NOTHING
RETURNING id;

-- name: TokenByHash :one
-- A token that is neither revoked nor expired at @now.
SELECT id, name, scopes, expires_at FROM api_tokens
WHERE hash = @hash AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > @now::timestamptz);

-- name: ListTokens :many
SELECT id, name, scopes, created_at, expires_at, revoked_at, last_used_at FROM api_tokens ORDER BY name;

-- name: RevokeToken :one
-- Revokes the token named or identified by @ref; no row when there is no
-- such token or it is revoked already.
UPDATE api_tokens SET revoked_at = @now::timestamptz
WHERE (name = @ref OR id::text = @ref) AND revoked_at IS NULL
RETURNING id, name, hash;

-- name: RevokeTokensByPrefix :many
-- Revokes the tokens whose names start with @prefix.
UPDATE api_tokens SET revoked_at = @now::timestamptz
WHERE starts_with(name, @prefix::text) AND revoked_at IS NULL
RETURNING id, name, hash;

-- name: TouchTokens :exec
-- Records when tokens were last used (a batch of ids, one time each).
UPDATE api_tokens t SET last_used_at = u.at
FROM (SELECT unnest(@ids::uuid[]) AS id, unnest(@ats::timestamptz[]) AS at) u
WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at);
