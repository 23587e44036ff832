-- Statements on the hot path that act on a list of keys say so with
-- "key = ANY (array)" and write every other condition as "(...) IS TRUE".
-- Plans are cached per connection (prepared statements) and are often made
-- while a table is nearly empty and its statistics are stale; a plain
-- "state IN (...)" or "finished_at IS NULL" then matches a partial index
-- that looks tiny, and the cached plan keeps scanning every unfinished job
-- or attempt as the table grows. In the IS TRUE form only the key index is
-- usable.

-- name: GetJob :one
SELECT * FROM jobs WHERE id = @id;

-- name: GetJobForUpdate :one
SELECT * FROM jobs WHERE id = @id FOR UPDATE;

-- name: ListAttempts :many
SELECT * FROM attempts WHERE job_id = @job_id ORDER BY number;

-- name: ListJobs :many
-- Newest first: by id, a UUIDv7 that carries the creation's millisecond
-- (jobIDs in uuid.go), so that the primary key serves the order, the
-- cursor (ids below before_id) and, as a range, the creation-time filters.
-- An empty label filter is left out of the plan, not tested as
-- labels @> '{}': the planner takes any @> for a rare match and, on a
-- table of a few hundred thousand jobs, preferred reading all of it and
-- sorting to walking the key back to the first page.
SELECT * FROM jobs
WHERE (cardinality(@states::text[]) = 0 OR state = ANY (@states::text[]))
  AND (@labels::jsonb = '{}'::jsonb OR labels @> @labels::jsonb)
  AND (@type::text = '' OR type = @type::text)
  AND id >= @min_id::uuid AND id < @before_id::uuid
  AND (sqlc.narg(created_after)::timestamptz IS NULL OR created_at >= sqlc.narg(created_after)::timestamptz)
  AND (sqlc.narg(created_before)::timestamptz IS NULL OR created_at < sqlc.narg(created_before)::timestamptz)
ORDER BY id DESC
LIMIT @max_rows;

-- name: SearchJobs :many
-- ListJobs with a text: the jobs whose name, command (its arguments joined
-- by spaces) or script contains @text in any case, among at most
-- @scan_rows jobs below before_id, newest first. The inner LIMIT bounds
-- what one call examines, walking the primary key back, and the outer one
-- stops the walk as soon as the page is full. No index serves the text:
-- one would cost every submission.
SELECT s.* FROM (
    SELECT * FROM jobs
    WHERE id >= @min_id::uuid AND id < @before_id::uuid
    ORDER BY id DESC
    LIMIT @scan_rows
) s
WHERE (cardinality(@states::text[]) = 0 OR s.state = ANY (@states::text[]))
  AND (@labels::jsonb = '{}'::jsonb OR s.labels @> @labels::jsonb)
  AND (@type::text = '' OR s.type = @type::text)
  AND (sqlc.narg(created_after)::timestamptz IS NULL OR s.created_at >= sqlc.narg(created_after)::timestamptz)
  AND (sqlc.narg(created_before)::timestamptz IS NULL OR s.created_at < sqlc.narg(created_before)::timestamptz)
  AND (strpos(lower(s.name), lower(@text::text)) > 0
       OR strpos(lower(coalesce(s.spec->>'script', '')), lower(@text::text)) > 0
       OR strpos(lower(array_to_string(ARRAY(SELECT jsonb_array_elements_text(coalesce(s.spec->'command', '[]'::jsonb))), ' ')), lower(@text::text)) > 0)
ORDER BY s.id DESC
LIMIT @max_rows;

-- name: JobScanEnd :many
-- The last job a SearchJobs with the same bounds examined (the one after
-- the first @skip below before_id, @skip = scan_rows - 1), and the next
-- one if any: none or one row when nothing is left below the search.
SELECT id, created_at FROM jobs
WHERE id >= @min_id::uuid AND id < @before_id::uuid
ORDER BY id DESC
LIMIT 2 OFFSET @skip;

-- name: ClaimJobs :many
-- Claims ready jobs for a list of slots (worker ids, one per free slot;
-- all with the same labels and image), priority then FIFO, and starts
-- their attempts on the job rows with fresh fencing tokens: the k-th job
-- goes to the k-th slot of a worker that is still connected. A job's
-- previous attempt, if any, moves to job_attempts first. No step joins
-- two CTEs: the planner cannot estimate their sizes and joined them by
-- nested loops, a cost that grew with the square of the batch. The slots
-- travel as an array, and a job's rank, its position in it, comes from a
-- window over the claimed rows in dispatch order. The job's outcome (a
-- retried attempt's failure) is cleared: it stays on that attempt.
WITH live AS (
    -- Only connected workers take jobs; the share lock orders a claim
    -- against a concurrent drain of the worker (scale-down). Rows are
    -- locked in id order, as heartbeats lock them (no deadlock).
    SELECT w.id FROM workers w WHERE w.id = ANY (@worker_ids::uuid[]) AND w.state = 'connected' ORDER BY w.id FOR SHARE
), usable AS (
    SELECT coalesce(array_agg(s.w ORDER BY s.n), '{}') AS ws
    FROM unnest(@worker_ids::uuid[]) WITH ORDINALITY AS s(w, n)
    WHERE s.w IN (SELECT id FROM live)
), picked AS (
    -- The walk starts at the dispatcher's cursor (@after_priority,
    -- @after_id: where its last claim for workers like these stopped),
    -- not at the head of jobs_ready_idx: the entries before it are mostly
    -- jobs claimed since, dead index entries that every claim would step
    -- over again until a vacuum removes them (none can while an older
    -- snapshot is held), and jobs these workers cannot run. Two ranges of
    -- the index, in dispatch order: the cursor's priority after its id,
    -- then the lower priorities. With @after_priority above the highest
    -- priority the walk starts at the head; below the lowest, it is empty.
    -- The dispatcher moves its cursor back whenever a job becomes ready
    -- before it (scheduler.cursors).
    SELECT r.id, r.attempt, r.run_at, row_number() OVER (ORDER BY r.priority DESC, r.id) AS rank FROM (
        SELECT * FROM (
            SELECT j.id, j.attempt, j.priority, j.run_at FROM jobs j
            WHERE j.state IN ('queued', 'retrying') AND j.priority = @after_priority::bigint AND j.id > @after_id::uuid
              AND (j.run_at IS NULL OR j.run_at <= @now::timestamptz)
              AND hodei_job_fits(j.labels, j.image, j.cpu_millis, j.memory_mib,
                  @worker_labels::jsonb, @worker_image::text, @worker_cpu_millis::bigint, @worker_memory_mib::bigint)
            ORDER BY j.priority DESC, j.id
            LIMIT (SELECT cardinality(ws) FROM usable)
            FOR UPDATE SKIP LOCKED
        ) same
        UNION ALL
        SELECT * FROM (
            SELECT j.id, j.attempt, j.priority, j.run_at FROM jobs j
            WHERE j.state IN ('queued', 'retrying') AND j.priority < @after_priority::bigint
              AND (j.run_at IS NULL OR j.run_at <= @now::timestamptz)
              AND hodei_job_fits(j.labels, j.image, j.cpu_millis, j.memory_mib,
                  @worker_labels::jsonb, @worker_image::text, @worker_cpu_millis::bigint, @worker_memory_mib::bigint)
            ORDER BY j.priority DESC, j.id
            LIMIT (SELECT cardinality(ws) FROM usable)
            FOR UPDATE SKIP LOCKED
        ) lower
        LIMIT (SELECT cardinality(ws) FROM usable)
    ) r
), archived AS (
    INSERT INTO job_attempts (job_id, number, token, worker_id, state, assigned_at, started_at, finished_at, exit_code, signal, failure_class, message)
    SELECT j.id, j.attempt, j.attempt_token, j.attempt_worker_id, j.attempt_state, j.attempt_assigned_at, j.attempt_started_at,
           j.attempt_finished_at, j.attempt_exit_code, j.attempt_signal, j.attempt_failure_class, j.attempt_message
    FROM jobs j
    WHERE j.id = ANY (ARRAY(SELECT id FROM picked WHERE attempt > 0))
), claimed AS (
    UPDATE jobs j
    SET state = 'assigned', attempt = j.attempt + 1, updated_at = @now, run_at = NULL,
        attempt_token = nextval('fencing_token_seq'), attempt_worker_id = (SELECT ws FROM usable)[p.rank],
        attempt_state = 'assigned', attempt_assigned_at = @now, attempt_started_at = NULL, attempt_finished_at = NULL,
        attempt_exit_code = NULL, attempt_signal = '', attempt_failure_class = NULL, attempt_message = '',
        exit_code = NULL, failure_class = NULL, message = ''
    FROM picked p
    WHERE j.id = p.id AND (j.state IN ('queued', 'retrying')) IS TRUE
    RETURNING j.id, j.attempt, j.spec, j.created_at, j.attempt_token::bigint AS token, j.attempt_worker_id::uuid AS worker_id, j.priority,
        coalesce(p.run_at, j.created_at)::timestamptz AS ready_at
)
-- One row per claimed job, or one row of nulls when none was; each
-- carries the number of usable slots: a claim that took fewer jobs walked
-- to the end of the index.
SELECT (SELECT cardinality(ws) FROM usable)::int AS usable, c.id, c.attempt, c.spec, c.created_at, c.token, c.worker_id, c.priority, c.ready_at
FROM (SELECT 1) one LEFT JOIN claimed c ON true;

-- name: GetAttempt :one
-- The attempt of a job with this token (the job's latest or an earlier
-- one) with the job locked.
SELECT a.job_id, a.number, a.token, a.worker_id, a.state, a.assigned_at, a.started_at, a.finished_at, a.failure_class,
       j.state AS job_state, j.attempt AS job_attempt
FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.job_id = @job_id AND a.token = @token
FOR UPDATE OF j;

-- name: FinishJobAttempt :exec
-- Ends the job's latest attempt (of token) and moves the job on, in one
-- write of its row. attempt_started_at is filled when the start report
-- came with the result.
UPDATE jobs
SET attempt_state = @attempt_state::text, attempt_finished_at = @now::timestamptz, attempt_exit_code = sqlc.narg(exit_code), attempt_signal = @signal,
    attempt_failure_class = sqlc.narg(failure_class), attempt_message = @message,
    attempt_started_at = coalesce(attempt_started_at, sqlc.narg(started_at)),
    state = @state, updated_at = @now, finished_at = sqlc.narg(finished_at), run_at = sqlc.narg(run_at),
    exit_code = sqlc.narg(exit_code), failure_class = sqlc.narg(failure_class), message = @message
WHERE id = @job_id AND attempt_token = @token::bigint AND (attempt_finished_at IS NULL) IS TRUE;

-- name: UpdateJobState :exec
UPDATE jobs
SET state = @state, updated_at = @now, finished_at = sqlc.narg(finished_at), run_at = sqlc.narg(run_at),
    exit_code = sqlc.narg(exit_code), failure_class = sqlc.narg(failure_class), message = @message
WHERE id = @id;

-- name: ListRunningAttemptsOfWorker :many
-- Only a job's latest attempt can be unfinished, and only while the job
-- is assigned or running (jobs_live_idx).
SELECT j.id AS job_id, j.attempt AS number, j.attempt_token::bigint AS token, j.attempt_state::text AS state, j.spec,
       coalesce(j.attempt_started_at, j.attempt_assigned_at)::timestamptz AS ran_from, j.attempt_assigned_at::timestamptz AS assigned_at
FROM jobs j
WHERE j.state IN ('assigned', 'running') AND j.attempt_worker_id = @worker_id::uuid
ORDER BY j.id;

-- name: NextRunAt :one
-- The earliest future run_at of a waiting job (a retry backoff), for the
-- dispatcher's timer.
SELECT coalesce(min(run_at), '9999-01-01T00:00:00Z')::timestamptz AS run_at FROM jobs WHERE state = 'retrying' AND run_at > @now::timestamptz;

-- name: RequeueJob :exec
-- A manual retry: back to queued for more attempts.
UPDATE jobs SET state = 'queued', updated_at = @now, finished_at = NULL, run_at = NULL, exit_code = NULL,
    failure_class = NULL, message = '', max_attempts = @max_attempts
WHERE id = @id;

-- name: OverdueAttempts :many
-- Started attempts whose job timeout (spec.timeout, nanoseconds) plus a
-- margin has passed without a result: their worker went silent.
SELECT j.id AS job_id, j.attempt_token::bigint AS token FROM jobs j
WHERE j.state = 'running'
  AND coalesce((j.spec->>'timeout')::bigint, 0) > 0
  AND j.attempt_started_at + make_interval(secs => (j.spec->>'timeout')::bigint / 1e9) + make_interval(secs => @margin_seconds::double precision) < @now;

-- name: ReadyJobs :many
-- Ready queued jobs in dispatch order, for demand and explanations.
SELECT id AS job_id, image, labels, cpu_millis, memory_mib FROM jobs
WHERE state IN ('queued', 'retrying') AND (run_at IS NULL OR run_at <= @now::timestamptz)
ORDER BY priority DESC, id LIMIT @max_rows;

-- name: ReadyKinds :many
-- The ready jobs grouped by what they need, with how many need it: demand
-- past the first page of ReadyJobs. Reads every ready job.
SELECT image, labels, cpu_millis, memory_mib, count(*)::bigint AS n FROM jobs
WHERE state IN ('queued', 'retrying') AND (run_at IS NULL OR run_at <= @now::timestamptz)
GROUP BY image, labels, cpu_millis, memory_mib;

-- name: CountActiveJobs :many
-- Jobs in each non-final state: the waiting ones through jobs_ready_idx,
-- the ones on a worker through jobs_live_idx.
SELECT state, count(*)::bigint AS n FROM jobs WHERE state IN ('queued', 'retrying') GROUP BY state
UNION ALL
SELECT state, count(*)::bigint AS n FROM jobs WHERE state IN ('assigned', 'running') GROUP BY state;

-- name: InsertJobs :exec
-- Many jobs in one statement, in order.
INSERT INTO jobs (id, name, type, spec, state, priority, image, labels, idempotency_key, max_attempts, cpu_millis, memory_mib, submitted_by, created_at, updated_at)
SELECT unnest(@ids::uuid[]), unnest(@names::text[]), unnest(@types::text[]), unnest(@specs::jsonb[]), 'queued',
       unnest(@priorities::integer[]), unnest(@images::text[]), unnest(@labels::jsonb[]), nullif(unnest(@keys::text[]), ''),
       unnest(@max_attempts::integer[]), unnest(@cpu_millis::bigint[]), unnest(@memory_mib::bigint[]), sqlc.narg(submitted_by)::text, @now, @now;

-- name: JobsByIdempotencyKeys :many
SELECT * FROM jobs WHERE idempotency_key = ANY (@keys::text[]);

-- name: LockAttempts :many
-- The latest attempts of these jobs, the jobs locked (in id order, so that
-- concurrent batches cannot deadlock). Of the spec only the retry policy
-- matters here, and only for failures. ran_from is when the attempt
-- started, or was assigned when no start was reported (its duration's
-- origin).
SELECT j.attempt_token::bigint AS token, j.id AS job_id, j.attempt AS number, j.attempt_worker_id::uuid AS worker_id,
       j.attempt_state::text AS state, j.attempt_finished_at AS finished_at, j.attempt_failure_class AS failure_class,
       j.attempt_assigned_at::timestamptz AS assigned_at, j.state AS job_state, j.max_attempts, j.type,
       coalesce(j.attempt_started_at, j.attempt_assigned_at)::timestamptz AS ran_from,
       coalesce(j.spec->'retry', 'null')::jsonb AS retry
FROM jobs j
WHERE j.id = ANY (@job_ids::uuid[])
ORDER BY j.id
FOR UPDATE OF j;

-- name: EarlierAttempts :many
-- Attempts of these tokens that a later one replaced (all finished).
SELECT token, job_id, number, state, finished_at, failure_class FROM job_attempts WHERE token = ANY (@tokens::bigint[]);

-- name: FinishJobs :exec
-- Ends the latest attempts of many jobs and moves the jobs to a final
-- state (the attempt's: a result that schedules a retry is applied one by
-- one), in one write of each row; empty class means none.
UPDATE jobs j
SET attempt_state = u.state, attempt_finished_at = @now::timestamptz, attempt_exit_code = u.exit_code, attempt_signal = u.signal,
    attempt_failure_class = nullif(u.class, ''), attempt_message = u.message,
    attempt_started_at = coalesce(j.attempt_started_at, nullif(u.started_at, '0001-01-01T00:00:00Z'::timestamptz)),
    state = u.state, updated_at = @now, finished_at = @now, run_at = NULL, exit_code = u.exit_code,
    failure_class = nullif(u.class, ''), message = u.message
FROM (SELECT unnest(@job_ids::uuid[]) AS job_id, unnest(@tokens::bigint[]) AS token, unnest(@states::text[]) AS state,
             unnest(@exit_codes::integer[]) AS exit_code, unnest(@signals::text[]) AS signal, unnest(@classes::text[]) AS class,
             unnest(@messages::text[]) AS message, unnest(@started_ats::timestamptz[]) AS started_at) u
WHERE j.id = ANY (@job_ids::uuid[]) AND j.id = u.job_id AND j.attempt_token = u.token
  -- The attempt is not finished yet. Written as a join clause (u.token is
  -- never null) so that the planner does not count the few unfinished jobs
  -- of a table of finished ones as one row: with one row it may join the
  -- batch by a nested loop, running the unnest again for every job, as the
  -- start statement once did.
  AND (j.attempt_finished_at IS NULL OR u.token IS NULL) IS TRUE;

-- name: StartJobAttempts :exec
-- Starts these jobs' attempts (of these tokens). Fencing tokens are unique,
-- so a job whose token is in the list holds the attempt that token names:
-- no join of the two arrays is needed. With one (a join on job and token),
-- the planner took the few assigned attempts of a table of finished jobs
-- for one row and ran the arrays' unnest again for each job.
UPDATE jobs j SET state = 'running', updated_at = @now, attempt_state = 'running', attempt_started_at = @now
WHERE j.id = ANY (@job_ids::uuid[]) AND j.attempt_token = ANY (@tokens::bigint[]) AND (j.attempt_state = 'assigned') IS TRUE;

-- name: DeleteFinishedJobs :execrows
-- Jobs are found through the primary key: an id carries its creation
-- time (UUIDv7), and a job that finished before the cutoff was created
-- before it, so the scan covers only ids below the cutoff's, oldest first.
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE id < sqlc.arg(before_id)::uuid AND finished_at < sqlc.arg(cutoff)::timestamptz
    ORDER BY id LIMIT sqlc.arg(max_rows)::int
);

-- name: FirstReadyJob :many
-- The first job in dispatch order that workers like these can run now,
-- if any, without locking it: the furthest a dispatcher's claim cursor
-- for them may be (scheduler's recheck of its cursors).
SELECT j.priority, j.id FROM jobs j
WHERE j.state IN ('queued', 'retrying')
  AND (j.run_at IS NULL OR j.run_at <= @now::timestamptz)
  AND hodei_job_fits(j.labels, j.image, j.cpu_millis, j.memory_mib,
      @worker_labels::jsonb, @worker_image::text, @worker_cpu_millis::bigint, @worker_memory_mib::bigint)
ORDER BY j.priority DESC, j.id
LIMIT 1;

-- name: RetryPlaces :many
-- Where retried jobs that are waiting stand in dispatch order, with what
-- a worker needs to run them (scheduler: a retry moves claim cursors back).
SELECT j.priority, j.id, j.labels, j.image FROM jobs j
WHERE j.id = ANY (@ids::uuid[]) AND j.state IN ('queued', 'retrying');

-- name: DelayedRetries :many
-- The retries waiting out a backoff, earliest first.
SELECT j.id, j.run_at FROM jobs j WHERE j.state = 'retrying' AND j.run_at > @now::timestamptz ORDER BY j.run_at;
