package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// AddAuthority records a CA certificate (PEM) in the trust bundle; one
// already recorded (same fingerprint) is left as it is.
func (s *Store) AddAuthority(ctx context.Context, fingerprint string, certPEM []byte, notAfter time.Time) error {
	return s.q.AddCertificateAuthority(ctx, db.AddCertificateAuthorityParams{Fingerprint: fingerprint, CertPem: string(certPEM), NotAfter: notAfter, Now: s.now()})
}

// RetireOlderAuthorities makes the CAs recorded before fingerprint's
// leave the trust bundle at leavesAt (CA rotation: after the longest
// lifetime of a certificate they signed). CAs already leaving keep their
// time. It returns how many it retired.
func (s *Store) RetireOlderAuthorities(ctx context.Context, fingerprint string, leavesAt time.Time) (int64, error) {
	return s.q.RetireOlderAuthorities(ctx, db.RetireOlderAuthoritiesParams{LeavesAt: &leavesAt, Fingerprint: fingerprint})
}

// TrustBundle returns the CA certificates trusted now, concatenated PEM.
func (s *Store) TrustBundle(ctx context.Context) ([]byte, error) {
	rows, err := s.q.TrustedAuthorities(ctx, s.now())
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	var b []byte
	for _, r := range rows {
		b = append(b, r.CertPem...)
	}
	return b, nil
}

// WorkerCertPending records the certificate a rotation issued to a worker
// until the worker says it switched to it (WorkerCertInstalled); the
// worker may open streams with either meanwhile.
func (s *Store) WorkerCertPending(ctx context.Context, id string, c Cert) error {
	uid, err := uuid.Parse(id)
	if err != nil {
		return err
	}
	return s.q.SetPendingWorkerCert(ctx, db.SetPendingWorkerCertParams{Serial: &c.Serial, NotAfter: &c.NotAfter, Now: s.now(), ID: uid})
}

// WorkerCertInstalled records that the worker switched to its pending
// certificate (serial) and publishes CertificateRotated. It returns the
// certificate's expiry; ErrNotFound when serial is not the pending one.
func (s *Store) WorkerCertInstalled(ctx context.Context, id, serial string) (time.Time, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return time.Time{}, err
	}
	var notAfter time.Time
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		na, err := db.New(tx).InstallPendingWorkerCert(ctx, db.InstallPendingWorkerCertParams{Now: s.now(), ID: uid, Serial: &serial})
		if IsNoRows(err) {
			return fmt.Errorf("worker %s has no pending certificate %s: %w", id, serial, job.ErrNotFound)
		}
		if err != nil {
			return err
		}
		notAfter = *na
		_, err = eventbus.Publish(ctx, tx, eventbus.New("worker", id, &hodeiv1.CertificateRotated{Subject: "worker/" + id, Kind: "worker",
			Serial: serial, NotAfter: timestamppb.New(notAfter)}))
		return err
	})
	return notAfter, err
}

// WorkerRotationFailed forgets the worker's pending certificate and
// publishes RotationFailed.
func (s *Store) WorkerRotationFailed(ctx context.Context, id, reason string) error {
	uid, err := uuid.Parse(id)
	if err != nil {
		return err
	}
	return s.InTx(ctx, func(tx pgx.Tx) error {
		if err := db.New(tx).DropPendingWorkerCert(ctx, db.DropPendingWorkerCertParams{Now: s.now(), ID: uid}); err != nil {
			return err
		}
		_, err := eventbus.Publish(ctx, tx, eventbus.New("worker", id, &hodeiv1.RotationFailed{Subject: "worker/" + id, Kind: "worker", Reason: storableReason(reason)}))
		return err
	})
}

// storableReason keeps an agent's text short and storable.
func storableReason(s string) string {
	if len(s) > 500 {
		s = s[:500]
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
