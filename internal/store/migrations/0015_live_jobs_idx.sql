-- The index of unfinished jobs (jobs_state_idx, on state, for queued,
-- assigned, running and retrying) took an entry when a job was submitted
-- and at each of its claims and starts. Waiting jobs are already in
-- jobs_ready_idx, so this one only needs the jobs that hold a worker, by
-- worker: what reconnects, worker loss, capacity and the autoscaler look
-- up. One index entry less per job. The dispatcher's retry timer looks up
-- the earliest backoff of the few retrying jobs by run_at (through the
-- ready index it would walk every queued job).
DROP INDEX jobs_state_idx;
CREATE INDEX jobs_live_idx ON jobs (attempt_worker_id) WHERE state IN ('assigned', 'running');
CREATE INDEX jobs_retry_idx ON jobs (run_at) WHERE state = 'retrying';
