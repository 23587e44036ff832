package server

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// TestGroupCommitIsolatesAFailingStream: two streams' reports gathered in
// one transaction, one of them unstorable (PostgreSQL refuses a NUL byte
// in text; the server's own handler would have removed it). The combined
// transaction fails, each stream is retried alone: the bad one gets the
// error, the good one its outcome, and nothing of the bad one is stored.
func TestGroupCommitIsolatesAFailingStream(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 2; i++ {
		j, _, err := st.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	wid := storetest.ConnectedWorker(t, st)
	as, err := st.Claim(ctx, store.WorkerMatch{ID: wid}, 2)
	if err != nil || len(as) != 2 {
		t.Fatalf("claim: %v %v", as, err)
	}
	tok := map[string]int64{as[0].JobID: as[0].Token, as[1].JobID: as[1].Token}

	// The first commit waits at the gate until both streams' reports are
	// pending, so that they go into one transaction.
	entered, gate := make(chan struct{}), make(chan struct{})
	var calls [][]store.Report
	first := true
	g := &groupCommit[store.Report, store.ReportOutcome]{max: 2048, apply: func(ctx context.Context, r []store.Report) ([]store.ReportOutcome, error) {
		if first {
			first = false
			close(entered)
			<-gate
		}
		calls = append(calls, r)
		return st.ApplyReports(ctx, r)
	}}
	type result struct {
		out []store.ReportOutcome
		err error
	}
	apply := func(r ...store.Report) chan result {
		c := make(chan result, 1)
		go func() {
			out, err := g.Apply(ctx, r)
			c <- result{out, err}
		}()
		return c
	}
	opener := apply(store.Report{Token: 987654321, Start: true}) // a stale start, alone
	<-entered
	bad := apply(store.Report{Token: tok[ids[0]], Finish: &store.Result{ExitCode: 1, Message: "nul \x00 byte"}})
	good := apply(store.Report{Token: tok[ids[1]], Finish: &store.Result{}})
	for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		g.mu.Lock()
		n := len(g.pending)
		g.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d reports pending after 10 s, want 2", n)
		}
	}
	close(gate)
	if r := <-opener; r.err != nil || !r.out[0].Stale {
		t.Fatalf("opener: %+v", r)
	}
	if r := <-bad; r.err == nil {
		t.Fatalf("the unstorable result was applied: %+v", r.out)
	}
	if r := <-good; r.err != nil || r.out[0].Outcome.State != job.StateSucceeded {
		t.Fatalf("good stream: %+v %v, want succeeded", r.out, r.err)
	}
	if len(calls) != 4 || len(calls[1]) != 2 {
		t.Fatalf("apply calls %v, want the opener, both streams together, then each alone", calls)
	}
	for i, want := range []job.State{job.StateAssigned, job.StateSucceeded} {
		if j, _ := st.GetJob(ctx, ids[i]); j.State != want {
			t.Fatalf("job %d: %s, want %s", i, j.State, want)
		}
	}
}

// TestConcurrentSubmissionsShareATransaction: submissions waiting while
// another one commits are stored together, each gets its own jobs back in
// order, and an idempotency key repeated across them makes one job.
func TestConcurrentSubmissionsShareATransaction(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	ctx := context.Background()
	entered, gate := make(chan struct{}), make(chan struct{})
	var calls [][]job.Spec
	storeFn := storeJobs(st, 1)
	first := true
	g := &groupCommit[job.Spec, createdJob]{max: 2000, apply: func(ctx context.Context, specs []job.Spec) ([]createdJob, error) {
		if first {
			first = false
			close(entered)
			<-gate
		}
		calls = append(calls, specs)
		return storeFn(ctx, specs)
	}}
	type result struct {
		out []createdJob
		err error
	}
	submit := func(specs ...job.Spec) chan result {
		c := make(chan result, 1)
		go func() {
			out, err := g.Apply(ctx, specs)
			c <- result{out, err}
		}()
		return c
	}
	spec := func(name, key string) job.Spec {
		return job.Spec{Name: name, Command: []string{"true"}, IdempotencyKey: key}
	}
	opener := submit(spec("opener", ""))
	<-entered
	a := submit(spec("a0", "k1"), spec("a1", ""))
	for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		g.mu.Lock()
		n := len(g.pending)
		g.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("submission a not pending after 10 s")
		}
	}
	b := submit(spec("b0", "k1"), spec("b1", "k2"))
	for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		g.mu.Lock()
		n := len(g.pending)
		g.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("submission b not pending after 10 s")
		}
	}
	close(gate)
	if r := <-opener; r.err != nil || len(r.out) != 1 || r.out[0].existing {
		t.Fatalf("opener: %+v %v", r.out, r.err)
	}
	ra, rb := <-a, <-b
	if ra.err != nil || rb.err != nil {
		t.Fatalf("a: %v, b: %v", ra.err, rb.err)
	}
	if len(calls) != 2 || len(calls[1]) != 4 {
		t.Fatalf("apply calls %v, want the opener, then a and b together", calls)
	}
	if got := []string{ra.out[0].job.Spec.Name, ra.out[1].job.Spec.Name, rb.out[1].job.Spec.Name}; got[0] != "a0" || got[1] != "a1" || got[2] != "b1" {
		t.Errorf("jobs out of order: %v", got)
	}
	if ra.out[0].existing || ra.out[1].existing || rb.out[1].existing {
		t.Errorf("new jobs reported as existing: a %+v, b %+v", ra.out, rb.out)
	}
	if !rb.out[0].existing || rb.out[0].job.ID != ra.out[0].job.ID {
		t.Errorf("b0 repeats a0's key: got job %s existing=%v, want a0's job %s", rb.out[0].job.ID, rb.out[0].existing, ra.out[0].job.ID)
	}
	for _, c := range []createdJob{ra.out[0], ra.out[1], rb.out[1]} {
		if j, err := st.GetJob(ctx, c.job.ID); err != nil || j.State != job.StateQueued {
			t.Errorf("job %s: %+v %v, want stored and queued", c.job.ID, j, err)
		}
	}
}
