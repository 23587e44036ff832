package scheduler_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/scheduler"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// handed is the dispatcher's side of one connected worker's stream in
// these tests: it has room for any number of attempts and records the
// attempts it is handed, in order.
type handed struct {
	worker    store.WorkerMatch
	capacity  chan struct{}
	delivered chan struct{} // signalled on each delivery
	mu        sync.Mutex
	got       []store.Assignment
}

func (h *handed) Free() []store.Slot { return []store.Slot{{Worker: h.worker, Free: 16}} }

func (h *handed) Deliver(_ string, as []store.Assignment) []store.Assignment {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, as...)
	select {
	case h.delivered <- struct{}{}:
	default:
	}
	return nil
}

func (h *handed) Capacity() <-chan struct{} { return h.capacity }

// waitFor waits until the worker was handed attempt n of job id.
func (h *handed) waitFor(t *testing.T, what string, id string, n int) store.Assignment {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		h.mu.Lock()
		i := slices.IndexFunc(h.got, func(a store.Assignment) bool { return a.JobID == id && a.Attempt == n })
		var a store.Assignment
		if i >= 0 {
			a = h.got[i]
		}
		h.mu.Unlock()
		if i >= 0 {
			return a
		}
		select {
		case <-h.delivered:
		case <-timeout:
			t.Fatalf("%s: job %s attempt %d was not dispatched in 15s", what, id, n)
		}
	}
}

// dispatching runs a bus and a dispatcher with this safety sweep on st
// until the test ends, for one connected worker, and returns the worker's
// side of its stream.
func dispatching(t *testing.T, st *store.Store, sweep time.Duration) *handed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bus := st.NewBus(eventbus.Config{Logger: storetest.Logger(t), SafetyPoll: 100 * time.Millisecond})
	w := &handed{worker: store.WorkerMatch{ID: storetest.ConnectedWorker(t, st)}, capacity: make(chan struct{}, 1), delivered: make(chan struct{}, 1)}
	d := scheduler.New(scheduler.Config{SafetySweep: sweep, Logger: storetest.Logger(t)}, st, bus, w)
	done := make(chan error, 2)
	go func() { done <- bus.Run(ctx) }()
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
	})
	return w
}

// TestDispatchFindsJobsBehindTheClaimCursor: claims start where the last
// one stopped (at the end of the ready jobs once they ran out), and still
// every job that becomes ready before that point is dispatched without
// the safety sweep (disabled here): a job whose id is older than the
// jobs already claimed (a late commit), one of a higher and one of a
// lower priority, a retried job, and jobs created while a backlog that no
// worker can run waits.
func TestDispatchFindsJobsBehindTheClaimCursor(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url := storetest.URL(t)
	st, err := store.Open(ctx, store.Config{URL: url, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	// Ids carry their creation time: this store's are a minute old, as
	// those of a transaction that commits late.
	late, err := store.Open(ctx, store.Config{URL: url, Logger: storetest.Logger(t), Now: func() time.Time { return time.Now().Add(-time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(late.Close)
	w := dispatching(t, st, -1)
	create := func(s *store.Store, spec job.Spec) string {
		t.Helper()
		spec.Command = []string{"true"}
		j, _, err := s.CreateJob(ctx, spec, 3)
		if err != nil {
			t.Fatal(err)
		}
		return j.ID
	}

	first := w.waitFor(t, "a first job", create(st, job.Spec{}), 1)
	w.waitFor(t, "a second job", create(st, job.Spec{}), 1)
	w.waitFor(t, "a job older than those claimed", create(late, job.Spec{}), 1)
	w.waitFor(t, "a job of a higher priority", create(st, job.Spec{Priority: 5}), 1)
	w.waitFor(t, "a job of a lower priority", create(st, job.Spec{Priority: -5}), 1)
	// A retry keeps the job's place, before everything claimed since.
	if _, err := st.FinishAttempt(ctx, uuid.MustParse(first.JobID), first.Token, store.Result{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RetryJob(ctx, first.JobID); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, "a retried job", first.JobID, 2)
	// A backlog the worker cannot run, then jobs it can, older and newer.
	specs := make([]job.Spec, 500)
	for i := range specs {
		specs[i] = job.Spec{Command: []string{"true"}, Labels: map[string]string{"gpu": "a100"}}
	}
	if _, _, err := st.CreateJobs(ctx, specs, 3); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		w.waitFor(t, fmt.Sprintf("job %d after a backlog", i), create(st, job.Spec{}), 1)
		w.waitFor(t, fmt.Sprintf("late job %d after a backlog", i), create(late, job.Spec{}), 1)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.got {
		if a.Spec.Labels["gpu"] != "" {
			t.Fatalf("job %s, which needs a gpu label, went to a worker without it", a.JobID)
		}
	}
}

// TestSweepFindsAJobAClaimSkippedWhileLocked: a claim passes over a job
// another transaction holds (SKIP LOCKED) and moves its cursor past it;
// when that transaction lets the job go unchanged, no event says so, and
// the safety sweep's recheck of the cursor finds it.
func TestSweepFindsAJobAClaimSkippedWhileLocked(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url := storetest.URL(t)
	st, err := store.Open(ctx, store.Config{URL: url, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	held, _, err := st.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", held.ID); err != nil {
		t.Fatal(err)
	}
	w := dispatching(t, st, 200*time.Millisecond)
	after, _, err := st.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, "a job after the held one", after.ID, 1)
	w.mu.Lock()
	n := len(w.got)
	w.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d attempts handed while the first job was held, want 1", n)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, "the job let go", held.ID, 1)
}

// TestDelayedRetriesWakeTheDispatcher: with the safety sweep off, a retry
// waiting out its backoff is dispatched when the backoff ends and not
// before, with no other wake-up: a retry scheduled after another one but
// due before it (its event moves the timer earlier), then the other one
// (found again once the timer has fired).
func TestDelayedRetriesWakeTheDispatcher(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, store.Config{URL: storetest.URL(t), Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	w := dispatching(t, st, -1)
	// fail fails the first attempt of a new job whose retry waits backoff,
	// and returns the job and when its retry is due.
	fail := func(backoff time.Duration) (string, time.Time) {
		t.Helper()
		j, _, err := st.CreateJob(ctx, job.Spec{Command: []string{"false"}, Retry: job.RetryPolicy{MaxAttempts: 2, InitialBackoff: backoff, MaxBackoff: backoff, RetryableExitCodes: []int32{1}}}, 2)
		if err != nil {
			t.Fatal(err)
		}
		a := w.waitFor(t, "a first attempt", j.ID, 1)
		out, err := st.FinishAttempt(ctx, uuid.MustParse(j.ID), a.Token, store.Result{ExitCode: 1, Class: job.FailureExitCode})
		if err != nil {
			t.Fatal(err)
		}
		var runAt time.Time
		if err := st.SQLForTests().QueryRow(ctx, "SELECT run_at FROM jobs WHERE id = $1 AND state = 'retrying'", j.ID).Scan(&runAt); err != nil {
			t.Fatalf("job %s not waiting for its retry (%s): %v", j.ID, out.State, err)
		}
		return j.ID, runAt
	}
	late, lateAt := fail(4 * time.Second)
	early, earlyAt := fail(500 * time.Millisecond)
	if !earlyAt.Before(lateAt) {
		t.Fatalf("retries due at %v and %v, want the second one first", earlyAt, lateAt)
	}
	for _, r := range []struct {
		what string
		id   string
		due  time.Time
	}{{"the retry due first", early, earlyAt}, {"the retry due last", late, lateAt}} {
		w.waitFor(t, r.what, r.id, 2)
		got := time.Now()
		if got.Before(r.due) {
			t.Errorf("%s dispatched at %v, before its backoff ended at %v", r.what, got, r.due)
		}
		if got.Sub(r.due) > 2*time.Second {
			t.Errorf("%s dispatched %v after its backoff ended, want the timer's wake-up", r.what, got.Sub(r.due))
		}
		if r.id == early && !got.Before(lateAt) {
			t.Errorf("%s dispatched at %v, after the other retry was due (%v): the timer was not moved earlier", r.what, got, lateAt)
		}
	}
}

// TestRetryWaitingWhenTheDispatcherStartsIsDispatched: a retry scheduled
// before the dispatcher started (its JobRetryScheduled is older than the
// dispatcher) is dispatched when its backoff ends, with the safety sweep
// off, although the dispatcher's claims went past its place meanwhile.
func TestRetryWaitingWhenTheDispatcherStartsIsDispatched(t *testing.T) {
	ctx := t.Context()
	st := storetest.Open(t)
	const backoff = 2 * time.Second
	retried, _, err := st.CreateJob(ctx, job.Spec{Command: []string{"false"}, Retry: job.RetryPolicy{MaxAttempts: 2, InitialBackoff: backoff, MaxBackoff: backoff, RetryableExitCodes: []int32{1}}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	before := storetest.ConnectedWorker(t, st)
	as, err := st.Claim(ctx, store.WorkerMatch{ID: before}, 1)
	if err != nil || len(as) != 1 {
		t.Fatalf("claim before the dispatcher: %v, %v", as, err)
	}
	if _, err := st.FinishAttempt(ctx, uuid.MustParse(retried.ID), as[0].Token, store.Result{ExitCode: 1, Class: job.FailureExitCode}); err != nil {
		t.Fatal(err)
	}
	var runAt time.Time
	if err := st.SQLForTests().QueryRow(ctx, "SELECT run_at FROM jobs WHERE id = $1 AND state = 'retrying'", retried.ID).Scan(&runAt); err != nil {
		t.Fatalf("job %s not waiting for its retry: %v", retried.ID, err)
	}
	w := dispatching(t, st, -1)
	// A job after the retried one: its claim moves the cursor past the
	// retried job's place (at the end, where the claim ran out of jobs).
	next, _, err := st.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, "a job created after the retried one", next.ID, 1)
	if time.Now().After(runAt) {
		t.Fatalf("the retry was due before the dispatcher claimed past it; raise the backoff (%s)", backoff)
	}
	w.waitFor(t, "a retry scheduled before the dispatcher started", retried.ID, 2)
	if got := time.Now(); got.Before(runAt) {
		t.Errorf("retry dispatched at %v, before its backoff ended at %v", got, runAt)
	}
}
