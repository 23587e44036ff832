package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// ErrUnauthenticated is returned for an unknown, used or expired token or
// a wrong credential.
var ErrUnauthenticated = errors.New("unauthenticated")

// Worker is a registry entry.
type Worker struct {
	ID        string
	Provider  string
	State     string
	Labels    map[string]string
	Slots     int
	Image     string
	ReplicaID string
	Handle    []byte
	LastSeen  time.Time
	Hostname  string
	Running   int // attempts assigned or running (WorkerLoad and LiveWorkers only)
	// CPUMillis and MemoryMiB are the most one job may use (0: not stated).
	CPUMillis, MemoryMiB int64
}

func workerFromRow(r db.Worker) Worker {
	w := Worker{ID: r.ID.String(), Provider: r.Provider, State: r.State, Slots: int(r.Slots), Image: r.Image, ReplicaID: r.ReplicaID, Handle: r.Handle,
		CPUMillis: r.CpuMillis, MemoryMiB: r.MemoryMib}
	_ = json.Unmarshal(r.Labels, &w.Labels)
	if r.LastSeen != nil {
		w.LastSeen = *r.LastSeen
	}
	return w
}

// NewWorker registers a worker a provider is about to start and returns
// its id and a one-time bootstrap token (stored hashed) valid for ttl.
func (s *Store) NewWorker(ctx context.Context, provider, image string, labels map[string]string, ttl time.Duration) (id, token string, err error) {
	wid := uuid.Must(uuid.NewV7())
	token = randomToken()
	l, _ := json.Marshal(nonNil(labels))
	now := s.now()
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := q.InsertWorker(ctx, db.InsertWorkerParams{ID: wid, Provider: provider, Labels: l, Slots: 1, Image: image, Now: now}); err != nil {
			return err
		}
		return q.InsertBootstrapToken(ctx, db.InsertBootstrapTokenParams{Hash: hash(token), WorkerID: wid, ExpiresAt: now.Add(ttl)})
	})
	if err != nil {
		return "", "", fmt.Errorf("new worker: %w", err)
	}
	return wid.String(), token, nil
}

// WorkerProvisioned records that the provider started the worker.
// The handle is stored with the worker for reconciliation.
func (s *Store) WorkerProvisioned(ctx context.Context, id, provider, image string, handle []byte) error {
	uid, err := uuid.Parse(id)
	if err != nil {
		return err
	}
	return s.InTx(ctx, func(tx pgx.Tx) error {
		if err := db.New(tx).SetWorkerHandle(ctx, db.SetWorkerHandleParams{Handle: handle, Now: s.now(), ID: uid}); err != nil {
			return err
		}
		_, err := eventbus.Publish(ctx, tx, eventbus.New("worker", id, &hodeiv1.WorkerProvisioned{WorkerId: id, Provider: provider, Image: image}))
		return err
	})
}

// Enrollment is what an agent states when it enrolls.
type Enrollment struct {
	Token, Hostname, Version string
	Labels                   map[string]string
	Slots                    int
	CPUMillis, MemoryMiB     int64
	// Issue, when set, issues the worker's client certificate once its
	// identity is known; its serial is recorded with the worker in the
	// same transaction.
	Issue func(workerID string) (Cert, error)
}

// Cert is an issued certificate as the workers table records it.
type Cert struct {
	Serial   string
	NotAfter time.Time
	PEM      []byte
}

// Enroll trades a bootstrap token for the worker's identity and a stream
// credential (returned once, stored hashed), and its certificate when
// e.Issue is set.
func (s *Store) Enroll(ctx context.Context, e Enrollment) (Worker, string, Cert, error) {
	token, hostname, version, labels, slots, cpuMillis, memoryMiB := e.Token, e.Hostname, e.Version, e.Labels, e.Slots, e.CPUMillis, e.MemoryMiB
	now := s.now()
	cred := randomToken()
	l, _ := json.Marshal(nonNil(labels))
	var w Worker
	var cert Cert
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		id, err := q.UseBootstrapToken(ctx, db.UseBootstrapTokenParams{Now: &now, Hash: hash(token)})
		if err != nil {
			if IsNoRows(err) {
				return fmt.Errorf("bootstrap token: %w", ErrUnauthenticated)
			}
			return err
		}
		row, err := q.EnrollWorker(ctx, db.EnrollWorkerParams{CredentialHash: hash(cred), Hostname: hostname, Version: version, Labels: l,
			Slots: int32(max(slots, 1)), CpuMillis: max(cpuMillis, 0), MemoryMib: max(memoryMiB, 0), Now: now, ID: id})
		if err != nil {
			return err
		}
		w = workerFromRow(row)
		if e.Issue == nil {
			return nil
		}
		if cert, err = e.Issue(w.ID); err != nil {
			return err
		}
		return q.SetWorkerCert(ctx, db.SetWorkerCertParams{Serial: &cert.Serial, NotAfter: &cert.NotAfter, Now: now, ID: id})
	})
	if err != nil {
		return Worker{}, "", Cert{}, fmt.Errorf("enroll: %w", err)
	}
	return w, cred, cert, nil
}

// ConnectWorker authenticates a worker's stream on replica and publishes
// WorkerRegistered (first connection) or WorkerReconnected. serial is
// the stream's client certificate's ("" over plaintext): the worker's
// current one or the pending one of a rotation.
func (s *Store) ConnectWorker(ctx context.Context, id, credential, serial, replica string, draining bool) (Worker, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return Worker{}, fmt.Errorf("worker id: %w", ErrUnauthenticated)
	}
	now := s.now()
	var w Worker
	var refused string // why a known worker could not reconnect
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		before, err := q.GetWorker(ctx, uid)
		if err != nil {
			if IsNoRows(err) {
				return fmt.Errorf("worker %s: %w", id, ErrUnauthenticated)
			}
			return err
		}
		row, err := q.ConnectWorker(ctx, db.ConnectWorkerParams{Draining: draining, ReplicaID: replica, Now: &now, Serial: serial, ID: uid, CredentialHash: hash(credential)})
		if err != nil {
			if IsNoRows(err) {
				refused = fmt.Sprintf("worker is %s or its credential or certificate is wrong", before.State)
				return fmt.Errorf("worker %s: %w", id, ErrUnauthenticated)
			}
			return err
		}
		w = workerFromRow(row)
		var ev eventbus.Event
		if before.LastSeen == nil {
			ev = eventbus.New("worker", id, &hodeiv1.WorkerRegistered{WorkerId: id, Provider: w.Provider, Labels: w.Labels, Slots: int32(w.Slots), Image: w.Image, ReplicaId: replica})
		} else {
			ev = eventbus.New("worker", id, &hodeiv1.WorkerReconnected{WorkerId: id, ReplicaId: replica})
		}
		_, err = eventbus.Publish(ctx, tx, ev)
		return err
	})
	if refused != "" {
		if perr := s.PublishEvents(ctx, eventbus.New("worker", id, &hodeiv1.WorkerRecoveryFailed{WorkerId: id, Reason: refused})); perr != nil {
			s.log.Warn("publish WorkerRecoveryFailed", "worker_id", id, "err", perr)
		}
	}
	return w, err
}

// TouchWorkers records when many workers were last heard from, in one
// write.
// It returns the workers among them whose row says disconnected.
func (s *Store) TouchWorkers(ctx context.Context, seen map[string]time.Time) (expired []string, err error) {
	var p db.TouchWorkersParams
	for id, t := range seen {
		if u, err := uuid.Parse(id); err == nil {
			p.Ids = append(p.Ids, u)
			p.Seen = append(p.Seen, t)
		}
	}
	rows, err := s.q.TouchWorkers(ctx, p)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if r.State == "disconnected" {
			expired = append(expired, r.ID.String())
		}
	}
	return expired, nil
}

// WorkerGone marks a worker disconnected (or terminated) and fails its
// unfinished attempts as worker_lost, applying their retry policies. It
// returns the ids of the affected jobs.
func (s *Store) WorkerGone(ctx context.Context, id, state, reason string, expected bool) ([]string, error) {
	return s.workerGone(ctx, &hodeiv1.WorkerDisconnected{WorkerId: id, Reason: reason, Expected: expected}, state, false)
}

// WorkerDied records that a worker's container or pod stopped, as its
// provider saw it: the worker is disconnected and its unfinished attempts
// fail as worker_lost now, not when its lease runs out. That holds for a
// draining worker too (it drains because its pod is being deleted, and
// the pod ended before the drain did); only a draining worker with
// nothing unfinished is left as it is, since scale-down is terminating it
// and records that itself.
func (s *Store) WorkerDied(ctx context.Context, id, reason string) ([]string, error) {
	return s.workerGone(ctx, &hodeiv1.WorkerDisconnected{WorkerId: id, Reason: reason}, "disconnected", true)
}

// workerGone is WorkerGone publishing d (its provider filled in). A
// terminated worker stays terminated. died is WorkerDied's rule: a
// draining worker with no unfinished attempt is left alone.
func (s *Store) workerGone(ctx context.Context, d *hodeiv1.WorkerDisconnected, state string, died bool) ([]string, error) {
	id, reason := d.WorkerId, d.Reason
	uid, err := uuid.Parse(id)
	if err != nil {
		return nil, err
	}
	var jobs []string
	var ends []AttemptEnd
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		jobs, ends = nil, nil
		q := db.New(tx)
		w, err := q.GetWorker(ctx, uid)
		if err != nil {
			return err
		}
		attempts, err := q.ListRunningAttemptsOfWorker(ctx, uid)
		if err != nil {
			return err
		}
		if w.State == state && len(attempts) == 0 {
			return nil // already recorded (another replica or the leader got here first)
		}
		if died && w.State == "draining" && len(attempts) == 0 {
			return nil
		}
		if w.State == "terminated" {
			state = "terminated"
			if len(attempts) == 0 {
				return nil
			}
		}
		if err := q.SetWorkerState(ctx, db.SetWorkerStateParams{State: state, Now: s.now(), ID: uid}); err != nil {
			return err
		}
		for _, a := range attempts {
			j, err := lockJob(ctx, q, a.JobID)
			if err != nil {
				return err
			}
			if j.Attempt != int(a.Number) || j.State.Final() {
				continue
			}
			var out Outcome
			r := Result{ExitCode: -1, Class: job.FailureWorkerLost, Message: "worker lost: " + reason}
			if err := s.finish(ctx, q, tx, j, a.Number, a.Token, r, &out, a.RanFrom); err != nil {
				return err
			}
			jobs = append(jobs, j.ID)
			ends = append(ends, AttemptEnd{JobID: j.ID, Attempt: a.Number, WorkerID: id, Since: a.AssignedAt, Class: r.Class, State: out.State, Message: r.Message})
		}
		d.Provider = w.Provider
		_, err = eventbus.Publish(ctx, tx, eventbus.New("worker", id, d))
		return err
	})
	if err != nil {
		return nil, err
	}
	s.ended(ends)
	return jobs, nil
}

// GetWorker returns a worker.
func (s *Store) GetWorker(ctx context.Context, id string) (Worker, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return Worker{}, err
	}
	r, err := s.q.GetWorker(ctx, uid)
	if err != nil {
		return Worker{}, err
	}
	return workerFromRow(r), nil
}

// ListWorkers lists workers of a provider ("" = all).
func (s *Store) ListWorkers(ctx context.Context, provider string) ([]Worker, error) {
	rows, err := s.q.ListWorkers(ctx, provider)
	if err != nil {
		return nil, err
	}
	out := make([]Worker, len(rows))
	for i, r := range rows {
		out[i] = workerFromRow(r)
	}
	return out, nil
}

// LiveWorkers lists the workers of a provider ("" = all) that are
// starting, connected or draining, with the attempts each holds.
func (s *Store) LiveWorkers(ctx context.Context, provider string) ([]Worker, error) {
	rows, err := s.q.ListLiveWorkers(ctx, provider)
	if err != nil {
		return nil, fmt.Errorf("list live workers: %w", err)
	}
	out := make([]Worker, len(rows))
	for i, r := range rows {
		out[i] = Worker{ID: r.ID.String(), Provider: r.Provider, State: r.State, Slots: int(r.Slots), Image: r.Image, ReplicaID: r.ReplicaID,
			Hostname: r.Hostname, Running: int(r.Running), CPUMillis: r.CpuMillis, MemoryMiB: r.MemoryMib}
		if r.LastSeen != nil {
			out[i].LastSeen = *r.LastSeen
		}
		_ = json.Unmarshal(r.Labels, &out[i].Labels)
	}
	return out, nil
}

// OwnsAttempt reports whether the attempt of job jobID with token is the
// job's current one and belongs to worker id.
func (s *Store) OwnsAttempt(ctx context.Context, jobID uuid.UUID, token int64, workerID string) (bool, error) {
	var owned bool
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		a, current, err := lockAttempt(ctx, db.New(tx), jobID, token)
		if errors.Is(err, job.ErrStale) {
			return nil
		}
		if err != nil {
			return err
		}
		owned = current && a.WorkerID.String() == workerID
		return nil
	})
	return owned, err
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// WorkerLoad lists connected workers (on any replica) with the number of
// attempts each runs (in Worker.Running).
func (s *Store) WorkerLoad(ctx context.Context) ([]Worker, error) {
	rows, err := s.q.WorkerLoad(ctx)
	if err != nil {
		return nil, fmt.Errorf("worker load: %w", err)
	}
	out := make([]Worker, len(rows))
	for i, r := range rows {
		out[i] = Worker{ID: r.ID.String(), Provider: r.Provider, State: "connected", Slots: int(r.Slots), Image: r.Image, Running: int(r.Running),
			CPUMillis: r.CpuMillis, MemoryMiB: r.MemoryMib}
		_ = json.Unmarshal(r.Labels, &out[i].Labels)
	}
	return out, nil
}

// PublishEvents publishes events in a transaction of their own.
func (s *Store) PublishEvents(ctx context.Context, events ...eventbus.Event) error {
	return s.InTx(ctx, func(tx pgx.Tx) error {
		_, err := eventbus.Publish(ctx, tx, events...)
		return err
	})
}

// UnlistedAttempts sorts the unfinished attempts of a worker that its
// agent did not list on reconnect: those never started are returned for
// re-sending (the RunJob was lost with a server); those started are ended
// as worker_lost, since the agent no longer has them.
func (s *Store) UnlistedAttempts(ctx context.Context, workerID string, listed map[int64]bool) ([]Assignment, error) {
	uid, err := uuid.Parse(workerID)
	if err != nil {
		return nil, err
	}
	attempts, err := s.q.ListRunningAttemptsOfWorker(ctx, uid)
	if err != nil {
		return nil, fmt.Errorf("attempts of worker %s: %w", workerID, err)
	}
	var out []Assignment
	for _, a := range attempts {
		if listed[a.Token] {
			continue
		}
		if a.State == string(job.StateAssigned) {
			// The row is the job's latest attempt, read with the job:
			// assigned to this worker and never started.
			as := Assignment{JobID: a.JobID.String(), Attempt: int(a.Number), Token: a.Token}
			if err := json.Unmarshal(a.Spec, &as.Spec); err != nil {
				return nil, fmt.Errorf("decode spec of job %s: %w", a.JobID, err)
			}
			out = append(out, as)
			continue
		}
		if _, err := s.FinishAttempt(ctx, a.JobID, a.Token, Result{ExitCode: -1, Class: job.FailureWorkerLost, Message: "the agent reconnected without this attempt"}); err != nil && !errors.Is(err, job.ErrStale) {
			return nil, err
		}
	}
	return out, nil
}

// WorkerCount is how many workers of a provider are in a state.
type WorkerCount struct {
	Provider, State string
	N               int64
}

// CountWorkers counts the workers that are not terminated by provider
// and state.
func (s *Store) CountWorkers(ctx context.Context) ([]WorkerCount, error) {
	rows, err := s.q.CountWorkers(ctx)
	if err != nil {
		return nil, fmt.Errorf("count workers: %w", err)
	}
	out := make([]WorkerCount, len(rows))
	for i, r := range rows {
		out[i] = WorkerCount{Provider: r.Provider, State: r.State, N: r.N}
	}
	return out, nil
}
