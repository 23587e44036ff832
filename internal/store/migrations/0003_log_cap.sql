-- Per-job log accounting for the size cap: bytes stored so far, and
-- whether the truncation marker was written.
ALTER TABLE jobs ADD COLUMN log_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN log_truncated boolean NOT NULL DEFAULT false;
