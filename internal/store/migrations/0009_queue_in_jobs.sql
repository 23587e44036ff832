-- The dispatch queue is the jobs table itself: a job is waiting exactly
-- when its state is queued or retrying (retrying ones once run_at has
-- passed), and jobs_ready_idx holds just those, in dispatch order
-- (priority, then id: ids are UUIDv7, so submission order). A separate
-- job_queue table cost a row, three index entries, a foreign-key check and
-- a delete per job, for a state the jobs row already had.
ALTER TABLE jobs ADD COLUMN cpu_millis bigint NOT NULL DEFAULT 0 CHECK (cpu_millis >= 0);
ALTER TABLE jobs ADD COLUMN memory_mib bigint NOT NULL DEFAULT 0 CHECK (memory_mib >= 0);
UPDATE jobs j SET cpu_millis = q.cpu_millis, memory_mib = q.memory_mib, run_at = CASE WHEN j.state = 'retrying' THEN q.run_at END
FROM job_queue q WHERE q.job_id = j.id;
DROP TABLE job_queue;
CREATE INDEX jobs_ready_idx ON jobs (priority DESC, id) WHERE state IN ('queued', 'retrying');
