package server

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"

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
	g := &groupCommit{apply: func(ctx context.Context, r []store.Report) ([]store.ReportOutcome, error) {
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
	opener := apply(store.Report{JobID: uuid.New(), Token: 987654321, Start: true}) // a stale start, alone
	<-entered
	bad := apply(store.Report{JobID: uuid.MustParse(ids[0]), Token: tok[ids[0]], Finish: &store.Result{ExitCode: 1, Message: "nul \x00 byte"}})
	good := apply(store.Report{JobID: uuid.MustParse(ids[1]), Token: tok[ids[1]], Finish: &store.Result{}})
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
