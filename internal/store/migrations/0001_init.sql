-- Hodei schema, version 1. Invariants live here as constraints.

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    name            text NOT NULL DEFAULT '',
    type            text NOT NULL DEFAULT '',
    spec            jsonb NOT NULL,
    state           text NOT NULL CHECK (state IN ('queued', 'assigned', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out', 'retrying')),
    priority        integer NOT NULL DEFAULT 0,
    image           text NOT NULL DEFAULT '',
    labels          jsonb NOT NULL DEFAULT '{}',
    idempotency_key text UNIQUE,
    attempt         integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts    integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    run_at          timestamptz,
    exit_code       integer,
    failure_class   text CHECK (failure_class IN ('exit_code', 'timeout', 'worker_lost', 'provisioning', 'cancelled', 'invalid')),
    message         text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    -- a job has a finish time exactly when it is in a final state
    CHECK ((state IN ('succeeded', 'failed', 'cancelled', 'timed_out')) = (finished_at IS NOT NULL)),
    -- a job waiting for its backoff knows when it may run again
    CHECK (state <> 'retrying' OR run_at IS NOT NULL)
);
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_state_idx ON jobs (state) WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'timed_out');

-- job_queue is the small, hot set of jobs waiting for dispatch.
CREATE TABLE job_queue (
    job_id     uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    seq        bigserial NOT NULL,
    priority   integer NOT NULL,
    image      text NOT NULL DEFAULT '',
    labels     jsonb NOT NULL DEFAULT '{}',
    cpu_millis bigint NOT NULL DEFAULT 0,
    memory_mib bigint NOT NULL DEFAULT 0,
    run_at     timestamptz NOT NULL
);
CREATE INDEX job_queue_order_idx ON job_queue (priority DESC, seq);

CREATE TABLE workers (
    id              uuid PRIMARY KEY,
    provider        text NOT NULL,
    state           text NOT NULL CHECK (state IN ('provisioning', 'connected', 'disconnected', 'draining', 'terminated')),
    labels          jsonb NOT NULL DEFAULT '{}',
    slots           integer NOT NULL DEFAULT 1 CHECK (slots >= 1),
    image           text NOT NULL DEFAULT '',
    version         text NOT NULL DEFAULT '',
    hostname        text NOT NULL DEFAULT '',
    credential_hash bytea,
    replica_id      text NOT NULL DEFAULT '',
    handle          jsonb,
    last_seen       timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE SEQUENCE fencing_token_seq;

-- job_attempts: one row per execution; token fences every report about it.
CREATE TABLE job_attempts (
    job_id        uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number        integer NOT NULL CHECK (number >= 1),
    token         bigint NOT NULL UNIQUE,
    worker_id     uuid NOT NULL,
    state         text NOT NULL CHECK (state IN ('assigned', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    assigned_at   timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz,
    exit_code     integer,
    signal        text NOT NULL DEFAULT '',
    failure_class text CHECK (failure_class IN ('exit_code', 'timeout', 'worker_lost', 'provisioning', 'cancelled', 'invalid')),
    message       text NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, number),
    CHECK ((state IN ('succeeded', 'failed', 'cancelled', 'timed_out')) = (finished_at IS NOT NULL))
);
CREATE INDEX job_attempts_worker_idx ON job_attempts (worker_id) WHERE finished_at IS NULL;

-- events is the outbox. xid orders events by transaction so that readers
-- never pass a transaction that has not committed yet (eventbus/doc.go).
CREATE TABLE events (
    id             bigserial PRIMARY KEY,
    xid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    type           text NOT NULL,
    aggregate_kind text NOT NULL,
    aggregate_id   text NOT NULL,
    correlation_id text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload        bytea NOT NULL
);
CREATE INDEX events_order_idx ON events (xid, id);

CREATE TABLE event_cursors (
    subscriber text PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT '0',
    event_id   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE event_dead_letters (
    id          bigserial PRIMARY KEY,
    subscriber  text NOT NULL,
    event_id    bigint NOT NULL,
    attempts    integer NOT NULL,
    last_error  text NOT NULL,
    parked_at   timestamptz NOT NULL,
    replayed_at timestamptz,
    UNIQUE (subscriber, event_id)
);

CREATE TABLE bootstrap_tokens (
    hash       bytea PRIMARY KEY,
    worker_id  uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

-- job_logs: one row per log batch of an attempt; lines is a serialised
-- hodei.v1.LogBatch. Re-sent batches hit the primary key and are ignored.
CREATE TABLE job_logs (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    seq        bigint NOT NULL,
    lines      integer NOT NULL,
    bytes      integer NOT NULL,
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
);
