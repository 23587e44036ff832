package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/secret"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// Secret is what is stored about a secret besides its sealed value.
type Secret struct {
	Name      string
	Version   int32
	CreatedAt time.Time
	UpdatedAt time.Time
	UpdatedBy string
}

// SealedSecret is a secret's sealed value as stored.
type SealedSecret struct {
	Name    string
	Version int32
	Sealed  secret.Sealed
}

// SecretAudit is one entry of a secret's audit trail.
type SecretAudit struct {
	At        time.Time
	Name      string
	Operation string // dispatch, set, delete, rotate-key
	Version   int32
	JobID     string
	Attempt   int32
	WorkerID  string
	Actor     string
}

// Audit operations.
const (
	AuditDispatch  = "dispatch"
	AuditSet       = "set"
	AuditDelete    = "delete"
	AuditRotateKey = "rotate-key"
)

// SetSecret stores a new version of secret name: seal seals the value for
// that version (the seal binds it). actor is the caller's identity. The
// change, its audit entry and its event commit together.
func (s *Store) SetSecret(ctx context.Context, name, actor string, seal func(version int32) (secret.Sealed, error)) (Secret, error) {
	if err := job.ValidateSecretName("name", name); err != nil {
		return Secret{}, err
	}
	now := s.now().Truncate(time.Microsecond)
	var out Secret
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		cur, err := q.SecretVersionForUpdate(ctx, name)
		if err != nil && !IsNoRows(err) {
			return err
		}
		last, err := q.LastAuditedVersion(ctx, name)
		if err != nil {
			return err
		}
		version := max(cur, last) + 1
		sealed, err := seal(version)
		if err != nil {
			return err
		}
		row, err := q.UpsertSecret(ctx, db.UpsertSecretParams{Name: name, Version: version, KeyID: sealed.KeyID, WrappedKey: sealed.WrappedKey,
			Ciphertext: sealed.Ciphertext, Now: now, UpdatedBy: actor})
		if err != nil {
			return err
		}
		out = Secret{Name: row.Name, Version: row.Version, CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt, UpdatedBy: row.UpdatedBy}
		return s.auditTx(ctx, tx, now, AuditSet, []string{name}, []int32{version}, "", 0, "", actor)
	})
	if err != nil {
		return Secret{}, fmt.Errorf("set secret %s: %w", name, err)
	}
	return out, nil
}

// auditTx writes audit entries and their SecretAccessAudited events.
func (s *Store) auditTx(ctx context.Context, tx pgx.Tx, at time.Time, op string, names []string, versions []int32, jobID string, attempt int32, workerID, actor string) error {
	var jid pgtype.UUID
	if jobID != "" {
		u, err := uuid.Parse(jobID)
		if err != nil {
			return fmt.Errorf("audit: job id %q: %w", jobID, err)
		}
		jid = pgtype.UUID{Bytes: u, Valid: true}
	}
	if err := db.New(tx).InsertSecretAudit(ctx, db.InsertSecretAuditParams{At: at, Names: names, Operation: op, Versions: versions,
		JobID: jid, Attempt: attempt, WorkerID: workerID, Actor: actor}); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	evs := make([]eventbus.Event, len(names))
	for i, n := range names {
		evs[i] = eventbus.New("secret", n, &hodeiv1.SecretAccessAudited{SecretName: n, Operation: op, Version: versions[i],
			JobId: jobID, Attempt: attempt, WorkerId: workerID, Actor: actor})
	}
	_, err := eventbus.Publish(ctx, tx, evs...)
	return err
}

// ListSecrets lists the secrets by name.
func (s *Store) ListSecrets(ctx context.Context) ([]Secret, error) {
	rows, err := s.q.ListSecrets(ctx)
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	out := make([]Secret, len(rows))
	for i, r := range rows {
		out[i] = Secret{Name: r.Name, Version: r.Version, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, UpdatedBy: r.UpdatedBy}
	}
	return out, nil
}

// DeleteSecret removes secret name (job.ErrNotFound when there is none).
func (s *Store) DeleteSecret(ctx context.Context, name, actor string) error {
	now := s.now().Truncate(time.Microsecond)
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		v, err := db.New(tx).DeleteSecret(ctx, name)
		if IsNoRows(err) {
			return fmt.Errorf("secret %s: %w", name, job.ErrNotFound)
		}
		if err != nil {
			return err
		}
		return s.auditTx(ctx, tx, now, AuditDelete, []string{name}, []int32{v}, "", 0, "", actor)
	})
	if err != nil {
		return fmt.Errorf("delete secret %s: %w", name, err)
	}
	return nil
}

// MissingSecrets returns the names among names that no secret has.
func (s *Store) MissingSecrets(ctx context.Context, names []string) ([]string, error) {
	have, err := s.q.SecretNamesExisting(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("look up secrets: %w", err)
	}
	var missing []string
	for _, n := range names {
		if !slices.Contains(have, n) && !slices.Contains(missing, n) {
			missing = append(missing, n)
		}
	}
	return missing, nil
}

// DispatchSecrets reads the sealed values of names (each once) for attempt of jobID
// on workerID and records the read: an audit entry per secret and the
// SecretInjected and SecretAccessAudited events, in one transaction, so
// that no value is read unaudited. A missing name is job.ErrNotFound. An
// empty actor is the token that submitted the job.
func (s *Store) DispatchSecrets(ctx context.Context, names []string, jobID string, attempt int32, workerID, actor string) ([]SealedSecret, error) {
	now := s.now().Truncate(time.Microsecond)
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	var out []SealedSecret
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		rows, err := db.New(tx).SecretsByNames(ctx, names)
		if err != nil {
			return err
		}
		byName := make(map[string]db.SecretsByNamesRow, len(rows))
		for _, r := range rows {
			byName[r.Name] = r
		}
		out = make([]SealedSecret, 0, len(names))
		versions := make([]int32, 0, len(names))
		for _, n := range names {
			r, ok := byName[n]
			if !ok {
				return fmt.Errorf("secret %s: %w", n, job.ErrNotFound)
			}
			out = append(out, SealedSecret{Name: n, Version: r.Version, Sealed: secret.Sealed{KeyID: r.KeyID, WrappedKey: r.WrappedKey, Ciphertext: r.Ciphertext}})
			versions = append(versions, r.Version)
		}
		if actor == "" {
			// The read is caused by whoever submitted the job.
			var by *string
			if err := tx.QueryRow(ctx, "SELECT submitted_by FROM jobs WHERE id = $1", jobID).Scan(&by); err != nil && !IsNoRows(err) {
				return err
			}
			if by != nil {
				actor = *by
			}
		}
		if _, err := eventbus.Publish(ctx, tx, eventbus.New("job", jobID, &hodeiv1.SecretInjected{JobId: jobID, Attempt: attempt, Names: names,
			WorkerId: workerID, Versions: versions})); err != nil {
			return err
		}
		return s.auditTx(ctx, tx, now, AuditDispatch, names, versions, jobID, attempt, workerID, actor)
	})
	if err != nil {
		return nil, fmt.Errorf("resolve secrets: %w", err)
	}
	return out, nil
}

// PeekSecrets reads the sealed values of names without an audit entry:
// for the server's second redaction of stored logs, which never hands a
// value on. Missing names are left out.
func (s *Store) PeekSecrets(ctx context.Context, names []string) ([]SealedSecret, error) {
	rows, err := s.q.SecretsByNames(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("read secrets: %w", err)
	}
	out := make([]SealedSecret, len(rows))
	for i, r := range rows {
		out[i] = SealedSecret{Name: r.Name, Version: r.Version, Sealed: secret.Sealed{KeyID: r.KeyID, WrappedKey: r.WrappedKey, Ciphertext: r.Ciphertext}}
	}
	return out, nil
}

// RewrapSecrets re-seals the data key of every secret with rewrap, in
// one transaction, with an audit entry each. It returns how many.
func (s *Store) RewrapSecrets(ctx context.Context, actor string, rewrap func(SealedSecret) (secret.Sealed, error)) (int, error) {
	now := s.now().Truncate(time.Microsecond)
	n := 0
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		rows, err := q.AllSecretsForUpdate(ctx)
		if err != nil {
			return err
		}
		names := make([]string, len(rows))
		versions := make([]int32, len(rows))
		for i, r := range rows {
			sealed, err := rewrap(SealedSecret{Name: r.Name, Version: r.Version, Sealed: secret.Sealed{KeyID: r.KeyID, WrappedKey: r.WrappedKey, Ciphertext: r.Ciphertext}})
			if err != nil {
				return err
			}
			if err := q.RewrapSecret(ctx, db.RewrapSecretParams{Name: r.Name, KeyID: sealed.KeyID, WrappedKey: sealed.WrappedKey}); err != nil {
				return err
			}
			names[i], versions[i] = r.Name, r.Version
		}
		n = len(rows)
		if n == 0 {
			return nil
		}
		return s.auditTx(ctx, tx, now, AuditRotateKey, names, versions, "", 0, "", actor)
	})
	if err != nil {
		return 0, fmt.Errorf("rotate secret key: %w", err)
	}
	return n, nil
}

// ListSecretAudit returns the newest limit audit entries of name, oldest
// first.
func (s *Store) ListSecretAudit(ctx context.Context, name string, limit int32) ([]SecretAudit, error) {
	rows, err := s.q.ListSecretAudit(ctx, db.ListSecretAuditParams{Name: name, Max: limit})
	if err != nil {
		return nil, fmt.Errorf("secret audit %s: %w", name, err)
	}
	out := make([]SecretAudit, len(rows))
	for i, r := range rows {
		a := SecretAudit{At: r.At, Name: r.Name, Operation: r.Operation, Version: r.Version, Attempt: r.Attempt, WorkerID: r.WorkerID, Actor: r.Actor}
		if r.JobID.Valid {
			a.JobID = uuid.UUID(r.JobID.Bytes).String()
		}
		out[i] = a
	}
	return out, nil
}
