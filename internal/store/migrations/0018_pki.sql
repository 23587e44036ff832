-- The certificate authorities whose certificates form the trust bundle
-- every replica serves (their keys are never stored here: each replica
-- reads the signing CA's key from its --ca-key-file). A CA leaves the
-- bundle at leaves_at: set when a newer CA replaces it, after the longest
-- lifetime of a certificate it signed.
CREATE TABLE certificate_authorities (
    fingerprint text PRIMARY KEY,
    cert_pem    text NOT NULL,
    not_after   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    leaves_at   timestamptz
);

-- A worker's client certificate: the serial of the one it uses, and of
-- the one it was issued by a rotation and has not yet confirmed. Either
-- opens its stream; a terminated worker's opens nothing.
ALTER TABLE workers
    ADD COLUMN cert_serial            text,
    ADD COLUMN cert_not_after         timestamptz,
    ADD COLUMN pending_cert_serial    text,
    ADD COLUMN pending_cert_not_after timestamptz;
