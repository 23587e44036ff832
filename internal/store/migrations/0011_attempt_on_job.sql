-- A job's latest attempt lives on the job's row; job_attempts keeps the
-- earlier ones (moved there by the claim that starts the next attempt).
-- A job that succeeds at its first attempt is then one row written three
-- times (submit, claim, result) instead of a job row written three times
-- plus an attempt row inserted (with a foreign-key check and three index
-- entries) and updated: about a third less PostgreSQL work per job in the
-- lifecycle statements (pgbench, batches of 32). The view "attempts" shows
-- every attempt, as the table did before.
ALTER TABLE jobs
    ADD COLUMN attempt_token         bigint,
    ADD COLUMN attempt_worker_id     uuid,
    ADD COLUMN attempt_state         text CHECK (attempt_state IN ('assigned', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    ADD COLUMN attempt_assigned_at   timestamptz,
    ADD COLUMN attempt_started_at    timestamptz,
    ADD COLUMN attempt_finished_at   timestamptz,
    ADD COLUMN attempt_exit_code     integer,
    ADD COLUMN attempt_signal        text NOT NULL DEFAULT '',
    ADD COLUMN attempt_failure_class text CHECK (attempt_failure_class IN ('exit_code', 'timeout', 'worker_lost', 'provisioning', 'cancelled', 'invalid')),
    ADD COLUMN attempt_message       text NOT NULL DEFAULT '';

UPDATE jobs j
SET attempt_token = a.token, attempt_worker_id = a.worker_id, attempt_state = a.state, attempt_assigned_at = a.assigned_at,
    attempt_started_at = a.started_at, attempt_finished_at = a.finished_at, attempt_exit_code = a.exit_code,
    attempt_signal = a.signal, attempt_failure_class = a.failure_class, attempt_message = a.message
FROM job_attempts a
WHERE a.job_id = j.id AND a.number = j.attempt;
DELETE FROM job_attempts a USING jobs j WHERE a.job_id = j.id AND a.number = j.attempt;

ALTER TABLE jobs
    -- a job that was ever claimed has its latest attempt on its row
    ADD CONSTRAINT jobs_attempt_present CHECK ((attempt > 0) = (attempt_token IS NOT NULL)),
    ADD CONSTRAINT jobs_attempt_complete CHECK (attempt_token IS NULL
        OR (attempt_worker_id IS NOT NULL AND attempt_state IS NOT NULL AND attempt_assigned_at IS NOT NULL)),
    ADD CONSTRAINT jobs_attempt_finished CHECK ((attempt_state IN ('succeeded', 'failed', 'cancelled', 'timed_out')) = (attempt_finished_at IS NOT NULL)),
    -- a job is assigned or running exactly while its attempt is
    ADD CONSTRAINT jobs_attempt_live CHECK ((state IN ('assigned', 'running')) = (attempt_state IS NOT NULL AND attempt_state IN ('assigned', 'running')));
-- Reports name an attempt by its fencing token.
CREATE UNIQUE INDEX jobs_attempt_token_idx ON jobs (attempt_token) WHERE attempt_token IS NOT NULL;
-- Earlier attempts are all finished.
DROP INDEX job_attempts_worker_idx;

CREATE VIEW attempts AS
SELECT job_id, number, token, worker_id, state, assigned_at, started_at, finished_at, exit_code, signal, failure_class, message
FROM job_attempts
UNION ALL
SELECT id, attempt, attempt_token, attempt_worker_id, attempt_state, attempt_assigned_at, attempt_started_at,
       attempt_finished_at, attempt_exit_code, attempt_signal, attempt_failure_class, attempt_message
FROM jobs
WHERE attempt_token IS NOT NULL;
