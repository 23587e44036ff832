-- Jobs are listed newest first by id (a UUIDv7 carrying the creation's
-- millisecond) instead of by created_at: the index on created_at took a new
-- entry at every write of a job row (three or four per job) for the list
-- alone.
DROP INDEX jobs_created_idx;
