-- name: InsertWorker :exec
INSERT INTO workers (id, provider, state, labels, slots, image, handle, created_at, updated_at)
VALUES (@id, @provider, 'provisioning', @labels, @slots, @image, @handle, @now, @now);

-- name: InsertBootstrapToken :exec
INSERT INTO bootstrap_tokens (hash, worker_id, expires_at) VALUES (@hash, @worker_id, @expires_at);

-- name: UseBootstrapToken :one
UPDATE bootstrap_tokens SET used_at = @now
WHERE hash = @hash AND used_at IS NULL AND expires_at > @now
RETURNING worker_id;

-- name: EnrollWorker :one
UPDATE workers SET credential_hash = @credential_hash, hostname = @hostname, version = @version,
    labels = labels || @labels::jsonb, slots = @slots, cpu_millis = @cpu_millis, memory_mib = @memory_mib, updated_at = @now
WHERE id = @id
RETURNING *;

-- name: GetWorker :one
SELECT * FROM workers WHERE id = @id;

-- name: ConnectWorker :one
-- A stream opens with the worker's credential and, over TLS, its client
-- certificate's serial: the current one, or the pending one of a rotation
-- (which then becomes current). Without a serial (plaintext) only a
-- worker that has no certificate connects. A worker that drains (it said
-- so in its hello) connects as draining: no claim is made for it.
UPDATE workers SET state = CASE WHEN @draining::bool THEN 'draining' ELSE 'connected' END, replica_id = @replica_id, last_seen = @now, updated_at = @now,
    cert_serial = CASE WHEN pending_cert_serial = @serial::text THEN pending_cert_serial ELSE cert_serial END,
    cert_not_after = CASE WHEN pending_cert_serial = @serial::text THEN pending_cert_not_after ELSE cert_not_after END,
    pending_cert_serial = CASE WHEN pending_cert_serial = @serial::text THEN NULL ELSE pending_cert_serial END,
    pending_cert_not_after = CASE WHEN pending_cert_serial = @serial::text THEN NULL ELSE pending_cert_not_after END
WHERE id = @id AND credential_hash = @credential_hash AND state <> 'terminated'
    AND ((@serial::text = '' AND cert_serial IS NULL) OR cert_serial = @serial::text OR pending_cert_serial = @serial::text)
RETURNING *;

-- name: SetWorkerState :exec
UPDATE workers SET state = @state, updated_at = @now WHERE id = @id;

-- name: TouchWorkers :many
-- One write for many heartbeats: each worker's time of last contact.
-- Returns the workers whose row no longer says connected (the leader
-- expired them): their streams must be re-established. The rows are
-- locked in id order first, as claims lock them: in any other order the
-- two can deadlock, which PostgreSQL breaks only after deadlock_timeout.
WITH locked AS (
    SELECT l.id FROM workers l WHERE l.id = ANY (@ids::uuid[]) ORDER BY l.id FOR NO KEY UPDATE
)
UPDATE workers w SET last_seen = greatest(w.last_seen, u.seen)
FROM (SELECT unnest(@ids::uuid[]) AS id, unnest(@seen::timestamptz[]) AS seen) u
WHERE w.id IN (SELECT id FROM locked) AND w.id = u.id
RETURNING w.id, w.state;

-- name: ListWorkers :many
SELECT * FROM workers WHERE (@provider::text = '' OR provider = @provider::text) ORDER BY created_at;

-- name: ListLiveWorkers :many
-- Workers starting, connected or draining, with the number of attempts
-- each holds (through jobs_live_idx).
SELECT w.id, w.provider, w.state, w.labels, w.slots, w.image, w.replica_id, w.last_seen, w.cpu_millis, w.memory_mib, w.hostname,
       (SELECT count(*) FROM jobs j WHERE j.state IN ('assigned', 'running') AND j.attempt_worker_id = w.id)::integer AS running
FROM workers w
WHERE w.state IN ('provisioning', 'connected', 'draining') AND (@provider::text = '' OR w.provider = @provider::text)
ORDER BY w.provider, w.created_at;

-- name: ExpiredWorkers :many
-- Workers that were connected or disconnected and have not been seen
-- since before the lease cutoff.
SELECT id FROM workers WHERE state IN ('connected', 'draining') AND last_seen < @cutoff;

-- name: WorkerLoad :many
-- Connected workers with the number of attempts they are running.
SELECT w.id, w.provider, w.labels, w.image, w.slots, w.cpu_millis, w.memory_mib,
       (SELECT count(*) FROM jobs j WHERE j.state IN ('assigned', 'running') AND j.attempt_worker_id = w.id)::integer AS running
FROM workers w WHERE w.state = 'connected' ORDER BY w.created_at;

-- name: SetWorkerHandle :exec
UPDATE workers SET handle = @handle, updated_at = @now WHERE id = @id;

-- name: CountWorkers :many
-- Workers by provider and state, terminated ones left out (they are
-- history): the hodei_workers gauge.
SELECT provider, state, count(*)::bigint AS n FROM workers WHERE state <> 'terminated' GROUP BY provider, state;
