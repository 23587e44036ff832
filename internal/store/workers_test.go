package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// workerEventTypes lists the types of a worker's events, oldest first.
func workerEventTypes(t *testing.T, s *store.Store, id string) []string {
	t.Helper()
	var types []string
	if err := s.SQLForTests().QueryRow(context.Background(),
		"SELECT coalesce(array_agg(type ORDER BY id), '{}') FROM events WHERE aggregate_kind = 'worker' AND aggregate_id = $1", id).Scan(&types); err != nil {
		t.Fatal(err)
	}
	return types
}

// TestWorkerAuthentication: a bootstrap token enrolls once; a stream
// needs the worker's id and credential, and a known worker refused is
// recorded as WorkerRecoveryFailed; its next good connection is a
// reconnection.
func TestWorkerAuthentication(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	id, token, err := s.NewWorker(ctx, "test", "", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Enroll(ctx, store.Enrollment{Token: "not-the-token", Slots: 1}); !errors.Is(err, store.ErrUnauthenticated) {
		t.Errorf("enroll with an unknown token: %v, want unauthenticated", err)
	}
	w, cred, _, err := s.Enroll(ctx, store.Enrollment{Token: token, Hostname: "h", Version: "test", Slots: 0, CPUMillis: -5})
	if err != nil || w.ID != id || w.Slots != 1 || w.CPUMillis != 0 {
		t.Fatalf("enroll: %+v, %v; want %s with 1 slot and no CPU limit", w, err, id)
	}
	if _, _, _, err := s.Enroll(ctx, store.Enrollment{Token: token, Slots: 1}); !errors.Is(err, store.ErrUnauthenticated) {
		t.Errorf("second enrollment with the same token: %v, want unauthenticated", err)
	}
	for name, c := range map[string]struct{ id, cred string }{
		"not an id":        {"worker-1", cred},
		"an unknown id":    {uuid.NewString(), cred},
		"a bad credential": {id, "wrong"},
	} {
		if _, err := s.ConnectWorker(ctx, c.id, c.cred, "", "r1", false); !errors.Is(err, store.ErrUnauthenticated) {
			t.Errorf("connect with %s: %v, want unauthenticated", name, err)
		}
	}
	for range 2 {
		if _, err := s.ConnectWorker(ctx, id, cred, "", "r1", false); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"WorkerRecoveryFailed", "WorkerRegistered", "WorkerReconnected"}
	if d := cmp.Diff(want, workerEventTypes(t, s, id)); d != "" {
		t.Errorf("worker events (-want +got):\n%s", d)
	}
}

// TestRepeatedStartChangesNothing: a start reported again, alone or
// twice in one batch, leaves the attempt started once, with one
// JobStarted.
func TestRepeatedStartChangesNothing(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	w := storetest.ConnectedWorker(t, s)
	var as []store.Assignment
	for range 2 {
		if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
			t.Fatal(err)
		}
		as = append(as, claimOne(t, s, w))
	}
	if err := s.StartAttempt(ctx, jid(as[0]), as[0].Token); err != nil {
		t.Fatal(err)
	}
	first, err := s.GetJob(ctx, as[0].JobID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartAttempt(ctx, jid(as[0]), as[0].Token); err != nil {
		t.Errorf("repeated start: %v", err)
	}
	start := store.Report{JobID: jid(as[1]), Token: as[1].Token, Start: true}
	if out, err := s.ApplyReports(ctx, []store.Report{start, start, {JobID: jid(as[0]), Token: as[0].Token, Start: true}}); err != nil || out[0].Stale || out[1].Stale || out[2].Stale {
		t.Fatalf("batch of repeated starts: %+v, %v", out, err)
	}
	again, err := s.GetJob(ctx, as[0].JobID)
	if err != nil || again.State != job.StateRunning || !again.Attempts[0].StartedAt.Equal(first.Attempts[0].StartedAt) {
		t.Errorf("after repeated starts: %s started %v (%v), want running since %v", again.State, again.Attempts[0].StartedAt, err, first.Attempts[0].StartedAt)
	}
	var started int
	if err := s.SQLForTests().QueryRow(ctx, "SELECT count(*) FROM events WHERE type = 'JobStarted'").Scan(&started); err != nil || started != 2 {
		t.Errorf("JobStarted events: %d (%v), want one per job", started, err)
	}
}

// TestDrainIfIdle: an idle worker is drained (it gets no more jobs); a
// busy one is put back to connected; a worker that is not connected is
// not drained.
func TestDrainIfIdle(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	idle, busy := storetest.ConnectedWorker(t, s), storetest.ConnectedWorker(t, s)
	if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
		t.Fatal(err)
	}
	claimOne(t, s, busy)
	for _, c := range []struct {
		id          string
		idle        bool
		state, name string
	}{{idle, true, "draining", "idle"}, {busy, false, "connected", "busy"}, {idle, false, "draining", "already draining"}} {
		got, err := s.DrainIfIdle(ctx, c.id)
		if err != nil || got != c.idle {
			t.Errorf("%s: DrainIfIdle = %v, %v; want %v", c.name, got, err, c.idle)
		}
		if w, err := s.GetWorker(ctx, c.id); err != nil || w.State != c.state {
			t.Errorf("%s: state %q (%v), want %s", c.name, w.State, err, c.state)
		}
	}
	if _, err := s.DrainIfIdle(ctx, "not-an-id"); err == nil {
		t.Error("drained a worker that is not an id")
	}
	if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
		t.Fatal(err)
	}
	if as, err := s.Claim(ctx, store.WorkerMatch{ID: idle}, 1); err != nil || len(as) != 0 {
		t.Errorf("claim for a drained worker: %v, %v; want nothing", as, err)
	}
}

// TestHeartbeatOfAnExpiredWorker: heartbeats recorded for a worker the
// leader expired name it, so that its replica closes its stream.
func TestHeartbeatOfAnExpiredWorker(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	live, gone := storetest.ConnectedWorker(t, s), storetest.ConnectedWorker(t, s)
	if _, err := s.WorkerGone(ctx, gone, "disconnected", "lease expired", false); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expired, err := s.TouchWorkers(ctx, map[string]time.Time{live: now, gone: now, "not-an-id": now})
	if err != nil || len(expired) != 1 || expired[0] != gone {
		t.Errorf("TouchWorkers = %v, %v; want only %s", expired, err, gone)
	}
}

// TestLogReadsRefuseABadJobID: reading logs of a job id that is not one
// is a field error naming the id.
func TestLogReadsRefuseABadJobID(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	var fe *job.FieldError
	if _, err := s.ReadLogs(ctx, "not-an-id", 0, store.LogPos{}, store.LogEnd, 10); !errors.As(err, &fe) || fe.Field != "id" {
		t.Errorf("logs of a bad id: %v, want a field error on id", err)
	}
	if _, _, _, err := s.LogTailStart(ctx, "not-an-id", 0, store.LogEnd, 10); !errors.As(err, &fe) || fe.Field != "id" {
		t.Errorf("log tail of a bad id: %v, want a field error on id", err)
	}
}

// TestWorkerDied: a worker whose pod or container its provider saw stop
// loses its unfinished attempts at once, also while it drains on its own
// (its pod is being deleted); a draining worker with nothing unfinished
// is left to scale-down, and a terminated worker stays terminated.
func TestWorkerDied(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	busy, idle, ended := storetest.ConnectedWorker(t, s), storetest.ConnectedWorker(t, s), storetest.ConnectedWorker(t, s)
	j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	claimOne(t, s, busy)
	for _, id := range []string{busy, idle} {
		if err := s.MarkDraining(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WorkerTerminated(ctx, ended, "process", "idle"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{busy, idle, ended} {
		if _, err := s.WorkerDied(ctx, id, "its container or pod died"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ id, state, name string }{{busy, "disconnected", "busy draining"}, {idle, "draining", "idle draining"}, {ended, "terminated", "terminated"}} {
		if w, err := s.GetWorker(ctx, c.id); err != nil || w.State != c.state {
			t.Errorf("%s worker: state %q (%v), want %s", c.name, w.State, err, c.state)
		}
	}
	got, err := s.GetJob(ctx, j.ID)
	if err != nil || len(got.Attempts) != 1 || got.Attempts[0].FailureClass != job.FailureWorkerLost {
		t.Fatalf("job of the busy worker: %+v (%v), want its attempt lost", got.Attempts, err)
	}
	var disconnected int
	if err := s.SQLForTests().QueryRow(ctx, "SELECT count(*) FROM events WHERE type = 'WorkerDisconnected'").Scan(&disconnected); err != nil || disconnected != 2 {
		t.Errorf("WorkerDisconnected events: %d (%v), want two (the terminated worker's, then the busy worker's)", disconnected, err)
	}
}
