-- Webhooks: HTTP endpoints that are sent the events of the types they
-- name. Each is a durable subscriber of the event bus, named
-- 'webhook:' || name, whose cursor is written with the webhook, at its
-- WebhookCreated event; its failed deliveries are that subscriber's dead
-- letters. Removing a webhook removes its cursor and dead letters with it,
-- so that they no longer hold back event retention.
CREATE TABLE webhooks (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$'),
    url          text NOT NULL CHECK (url ~ '^https?://'),
    types        text[] NOT NULL CHECK (cardinality(types) >= 1),
    labels       jsonb NOT NULL DEFAULT '{}',
    secret       text NOT NULL CHECK (secret <> ''),
    max_attempts integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    created_at   timestamptz NOT NULL
);
