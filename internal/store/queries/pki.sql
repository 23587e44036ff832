-- name: AddCertificateAuthority :exec
INSERT INTO certificate_authorities (fingerprint, cert_pem, not_after, created_at)
VALUES (@fingerprint, @cert_pem, @not_after, @now)
ON CONFLICT (fingerprint) DO NOTHING;

-- name: TrustedAuthorities :many
-- The trust bundle at now: CAs not expired that have not left it.
SELECT fingerprint, cert_pem, not_after, leaves_at FROM certificate_authorities
WHERE not_after > @now AND (leaves_at IS NULL OR leaves_at > @now)
ORDER BY created_at, fingerprint;

-- name: RetireOlderAuthorities :execrows
-- A newer CA signs from now on: the CAs recorded before it leave the
-- bundle at leaves_at (those already leaving keep their time).
UPDATE certificate_authorities o SET leaves_at = @leaves_at
WHERE o.leaves_at IS NULL AND o.fingerprint <> @fingerprint::text
    AND o.created_at < (SELECT n.created_at FROM certificate_authorities n WHERE n.fingerprint = @fingerprint::text);

-- name: SetWorkerCert :exec
UPDATE workers SET cert_serial = @serial, cert_not_after = @not_after,
    pending_cert_serial = NULL, pending_cert_not_after = NULL, updated_at = @now
WHERE id = @id;

-- name: SetPendingWorkerCert :exec
UPDATE workers SET pending_cert_serial = @serial, pending_cert_not_after = @not_after, updated_at = @now
WHERE id = @id AND state <> 'terminated';

-- name: InstallPendingWorkerCert :one
-- The worker switched to its pending certificate.
UPDATE workers SET cert_serial = pending_cert_serial, cert_not_after = pending_cert_not_after,
    pending_cert_serial = NULL, pending_cert_not_after = NULL, updated_at = @now
WHERE id = @id AND pending_cert_serial = @serial
RETURNING cert_not_after;

-- name: DropPendingWorkerCert :exec
UPDATE workers SET pending_cert_serial = NULL, pending_cert_not_after = NULL, updated_at = @now
WHERE id = @id;
