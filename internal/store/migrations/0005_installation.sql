-- One row: this installation's id, stable across server restarts,
-- created by the first server that needs it (not here, so that databases
-- cloned from a migrated template get ids of their own). The Docker
-- provider labels its containers with it.
CREATE TABLE installation (
    id         text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    singleton  boolean NOT NULL DEFAULT true UNIQUE CHECK (singleton)
);
