-- name: ReadLogs :many
SELECT attempt, seq, data, created_at FROM job_logs
WHERE job_id = @job_id AND (@only_attempt::integer = 0 OR attempt = @only_attempt::integer)
  AND (attempt, seq) > (@after_attempt::integer, @after_seq::bigint)
  AND (attempt, seq) < (@before_attempt::integer, @before_seq::bigint)
ORDER BY attempt, seq
LIMIT @max_rows;

-- name: LogTailStart :many
-- The first batch of the shortest tail of a job's log before (before_attempt,
-- before_seq) that holds at least min_bytes, read backwards from there by
-- the primary key: a long log is not read whole. No row when the whole log
-- before that is shorter; earlier says whether batches come before it.
SELECT t.attempt, t.seq, EXISTS (
    SELECT 1 FROM job_logs e
    WHERE e.job_id = @job_id AND (@only_attempt::integer = 0 OR e.attempt = @only_attempt::integer)
      AND (e.attempt, e.seq) < (t.attempt, t.seq)
)::boolean AS earlier FROM (
    SELECT attempt, seq, sum(bytes) OVER (ORDER BY attempt DESC, seq DESC) AS acc
    FROM job_logs
    WHERE job_id = @job_id AND (@only_attempt::integer = 0 OR attempt = @only_attempt::integer)
      AND (attempt, seq) < (@before_attempt::integer, @before_seq::bigint)
    ORDER BY attempt DESC, seq DESC
) t
WHERE t.acc >= @min_bytes::bigint
LIMIT 1;

-- name: AttemptIsLatest :one
SELECT EXISTS (SELECT 1 FROM jobs WHERE id = @job_id AND attempt_token = @token::bigint);

-- name: InsertLogBatches :many
-- Stores many batches in one statement (group commit), each only while its
-- attempt is the job's latest; returns the (token, seq) pairs stored now.
WITH input AS (
    SELECT unnest(@job_ids::uuid[]) AS job_id, unnest(@tokens::bigint[]) AS token, unnest(@seqs::bigint[]) AS seq,
           unnest(@lines::integer[]) AS lines, unnest(@sizes::integer[]) AS bytes, unnest(@datas::bytea[]) AS data
)
INSERT INTO job_logs (job_id, attempt, seq, lines, bytes, data, created_at)
SELECT j.id, j.attempt, i.seq, i.lines, i.bytes, i.data, @now
FROM input i JOIN jobs j ON j.id = i.job_id AND j.attempt_token = i.token
WHERE j.id = ANY (@job_ids::uuid[])
ON CONFLICT DO NOTHING
RETURNING job_id, attempt, seq;

-- name: LogBudget :many
-- The log accounting of these jobs, with their latest attempts' tokens,
-- locked for update.
SELECT j.attempt_token::bigint AS token, j.id AS job_id, j.log_bytes, j.log_truncated
FROM jobs j
WHERE j.id = ANY (@job_ids::uuid[])
ORDER BY j.id
FOR UPDATE OF j;

-- name: SetLogBudget :exec
UPDATE jobs j SET log_bytes = u.log_bytes, log_truncated = u.log_truncated
FROM (SELECT unnest(@ids::uuid[]) AS id, unnest(@bytes::bigint[]) AS log_bytes, unnest(@truncated::boolean[]) AS log_truncated) u
WHERE j.id = ANY (@ids::uuid[]) AND j.id = u.id;

-- name: NotifyMany :exec
SELECT pg_notify(@channel::text, p) FROM unnest(@payloads::text[]) AS p;
