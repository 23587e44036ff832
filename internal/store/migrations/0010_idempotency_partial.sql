-- Most jobs have no idempotency key, yet the unique constraint's index
-- held a NULL entry for every job and got a new one at every update of a
-- job row (three per job). A partial unique index holds just the keys.
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
