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
