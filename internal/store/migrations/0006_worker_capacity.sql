-- What one job on a worker may use at most (0 = not stated): a job that
-- needs more CPU or memory is not given to it.
ALTER TABLE workers ADD COLUMN cpu_millis bigint NOT NULL DEFAULT 0 CHECK (cpu_millis >= 0);
ALTER TABLE workers ADD COLUMN memory_mib bigint NOT NULL DEFAULT 0 CHECK (memory_mib >= 0);
