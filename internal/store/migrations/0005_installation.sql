-- One row: this installation's id, stable across server restarts. The
-- Docker provider labels its containers with it.
CREATE TABLE installation (
    id         text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    created_at timestamptz NOT NULL DEFAULT now(),
    singleton  boolean NOT NULL DEFAULT true UNIQUE CHECK (singleton)
);
INSERT INTO installation DEFAULT VALUES;
