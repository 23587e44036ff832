-- name: InsertLogBatch :execrows
INSERT INTO job_logs (job_id, attempt, seq, lines, bytes, data, created_at)
VALUES (@job_id, @attempt, @seq, @lines, @bytes, @data, @now)
ON CONFLICT DO NOTHING;

-- name: ReadLogs :many
SELECT attempt, seq, data, created_at FROM job_logs
WHERE job_id = @job_id AND (@only_attempt::integer = 0 OR attempt = @only_attempt::integer)
  AND (attempt, seq) > (@after_attempt::integer, @after_seq::bigint)
ORDER BY attempt, seq
LIMIT @max_rows;

-- name: InsertLogBatchFenced :execrows
-- Stores a batch only while its attempt is the job's latest one; a batch
-- seen before (same job, attempt, seq) is ignored.
INSERT INTO job_logs (job_id, attempt, seq, lines, bytes, data, created_at)
SELECT a.job_id, a.number, @seq, @lines, @bytes, @data, @now
FROM job_attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.token = @token AND j.attempt = a.number
ON CONFLICT DO NOTHING;

-- name: AttemptIsLatest :one
SELECT EXISTS (SELECT 1 FROM job_attempts a JOIN jobs j ON j.id = a.job_id WHERE a.token = @token AND j.attempt = a.number);
