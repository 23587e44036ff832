-- Whether a queued job fits a worker (labels, image, CPU, memory).
--
-- It is a PL/pgSQL function on purpose: the planner cannot inline it, so
-- it estimates the test as matching a third of the rows instead of the
-- 0.1 % it assumes for jsonb containment. With the real clauses inline the
-- claim read the whole queue through the run_at index and sorted it (12 ms
-- per claim at 10,000 queued jobs, growing with the queue); with the
-- function it walks job_queue_order_idx in priority/FIFO order and stops
-- after the slots it fills.
CREATE FUNCTION hodei_job_fits(
    job_labels jsonb, job_image text, job_cpu_millis bigint, job_memory_mib bigint,
    worker_labels jsonb, worker_image text, worker_cpu_millis bigint, worker_memory_mib bigint
) RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN job_labels <@ worker_labels
        AND (job_image = '' OR job_image = worker_image)
        AND (worker_cpu_millis = 0 OR job_cpu_millis <= worker_cpu_millis)
        AND (worker_memory_mib = 0 OR job_memory_mib <= worker_memory_mib);
END
$$;
