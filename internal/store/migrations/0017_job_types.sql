-- Job types: the retry policy (job.RetryPolicy as JSON, as in a spec) that
-- a job of the type gets for the fields its own spec leaves unset, applied
-- when it is submitted. Set through JobTypeService, or from the server's
-- --job-type-defaults file at start (the file's entries replace the
-- stored ones of the same names).
CREATE TABLE job_types (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]*$' AND length(name) <= 63),
    retry      jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);
