-- ListJobs filtered to failed, cancelled or timed-out jobs walked the
-- primary key back through every succeeded job until it had a page: with
-- a long history of successes, seconds. Those jobs are few, and their
-- index entries are written only when a job ends that way.
CREATE INDEX jobs_unsuccessful_idx ON jobs (id) WHERE state IN ('failed', 'cancelled', 'timed_out');
