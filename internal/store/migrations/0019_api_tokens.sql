-- API tokens: bearer credentials of API clients. Only the SHA-256 of a
-- token's secret is stored; the secret is shown once, when it is created.
-- Rows are never deleted: a revoked token keeps its row (revoked_at), so
-- that the name of the token that submitted a job stays unambiguous.
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]*$' AND length(name) <= 63),
    hash         bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    scopes       text[] NOT NULL CHECK (cardinality(scopes) > 0
                                        AND scopes <@ ARRAY['jobs:read', 'jobs:write', 'admin', 'metrics', 'secrets:use']::text[]),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz CHECK (expires_at > created_at),
    revoked_at   timestamptz CHECK (revoked_at >= created_at),
    last_used_at timestamptz
);

-- The name of the token that submitted a job; NULL for jobs submitted
-- before tokens existed.
ALTER TABLE jobs ADD COLUMN submitted_by text;
