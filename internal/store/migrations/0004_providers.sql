-- Providers: configuration (seeded from flags at start, changed through
-- the API) and health (kept by the leader's health monitor).
CREATE TABLE providers (
    name            text PRIMARY KEY,
    kind            text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    max_workers     integer NOT NULL DEFAULT 4 CHECK (max_workers >= 0),
    idle_timeout_ms bigint NOT NULL DEFAULT 60000 CHECK (idle_timeout_ms >= 0),
    ephemeral       boolean NOT NULL DEFAULT false,
    labels          jsonb NOT NULL DEFAULT '{}',
    any_image       boolean NOT NULL DEFAULT false,
    healthy         boolean NOT NULL DEFAULT true,
    unhealthy_since timestamptz,
    health_message  text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL,
    CHECK (healthy = (unhealthy_since IS NULL))
);
