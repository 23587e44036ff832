-- Secrets: each value sealed (AES-256-GCM) under its own data key, the
-- data key sealed under a key-encryption key named by key_id that lives
-- in the server's key file, never here. Both seals bind name and version.
-- version counts the values set under the name; a deleted secret keeps
-- its counter in secret_audit only.
CREATE TABLE secrets (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$' AND length(name) <= 63),
    version     integer NOT NULL CHECK (version > 0),
    key_id      text NOT NULL,
    wrapped_key bytea NOT NULL,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    updated_by  text NOT NULL DEFAULT ''
);

-- The audit trail: every read of a value (operation 'dispatch') and every
-- change, with the caller's identity (actor; empty without API tokens).
-- Kept apart from the event log, which retention prunes.
CREATE TABLE secret_audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL,
    name      text NOT NULL,
    operation text NOT NULL CHECK (operation IN ('dispatch', 'set', 'delete', 'rotate-key')),
    version   integer NOT NULL DEFAULT 0,
    job_id    uuid,
    attempt   integer NOT NULL DEFAULT 0,
    worker_id text NOT NULL DEFAULT '',
    actor     text NOT NULL DEFAULT ''
);
CREATE INDEX secret_audit_name_idx ON secret_audit (name, id);
