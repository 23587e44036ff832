-- Agents name an attempt in their reports by its job id and fencing
-- token, so reports find the job by its primary key: the unique index on
-- attempt_token took a new entry (and a uniqueness check) at the claim and
-- at the result of every job, for lookups only. Tokens stay unique by
-- construction (fencing_token_seq). Earlier attempts keep job_attempts'
-- unique index on token.
DROP INDEX jobs_attempt_token_idx;
