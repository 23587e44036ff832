-- The dispatcher's timer looks up the earliest future run_at (retry
-- backoff); without an index that is a scan of the queue per pass.
CREATE INDEX job_queue_run_at_idx ON job_queue (run_at);
