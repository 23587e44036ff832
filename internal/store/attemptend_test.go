package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestOnAttemptEndSeesOnlyAttemptsEndedWithoutAResult: the attempts the
// store ends itself (a silent worker expired, an attempt its agent no
// longer lists) reach OnAttemptEnd once each, with their worker, their
// assignment and their outcome; results from agents (ApplyReports, a
// retried failure included) never do.
func TestOnAttemptEndSeesOnlyAttemptsEndedWithoutAResult(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	var mu sync.Mutex
	var ends []store.AttemptEnd
	s.OnAttemptEnd(func(e store.AttemptEnd) {
		mu.Lock()
		ends = append(ends, e)
		mu.Unlock()
	})
	// Retries wait long enough not to be claimed again here.
	retry := job.RetryPolicy{MaxAttempts: 2, RetryableExitCodes: []int32{1}, InitialBackoff: time.Hour, MaxBackoff: time.Hour}
	run := func(w string) store.Assignment {
		t.Helper()
		if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, Retry: retry}, 1); err != nil {
			t.Fatal(err)
		}
		a := claimOne(t, s, w)
		if err := s.StartAttempt(ctx, jid(a), a.Token); err != nil {
			t.Fatal(err)
		}
		return a
	}
	// Results from agents: a success, and a failure that is retried.
	w := storetest.ConnectedWorker(t, s)
	ok, failed := run(w), run(w)
	out, err := s.ApplyReports(ctx, []store.Report{{JobID: jid(ok), Token: ok.Token, Finish: &store.Result{}}, {JobID: jid(failed), Token: failed.Token, Finish: &store.Result{ExitCode: 1}}})
	if err != nil || out[0].Outcome.State != job.StateSucceeded || out[1].Outcome.State != job.StateRetrying {
		t.Fatalf("agent results: %+v, %v; want succeeded and retrying", out, err)
	}
	// A worker silent past its lease, and one that reconnects without its attempt.
	silent := storetest.ConnectedWorker(t, s)
	expired := run(silent)
	if ws, err := s.ExpireSilentWorkers(ctx, time.Now().Add(time.Hour)); err != nil || len(ws) != 2 {
		t.Fatalf("expired workers %v, %v; want both (neither has a heartbeat)", ws, err)
	}
	back := storetest.ConnectedWorker(t, s)
	unlisted := run(back)
	if resend, err := s.UnlistedAttempts(ctx, back, map[int64]bool{}); err != nil || len(resend) != 0 {
		t.Fatalf("unlisted attempts: resend %v, %v; want none (the attempt had started)", resend, err)
	}

	since := func(a store.Assignment) time.Time {
		j, err := s.GetJob(ctx, a.JobID)
		if err != nil {
			t.Fatal(err)
		}
		return j.Attempts[0].AssignedAt
	}
	want := []store.AttemptEnd{
		{JobID: expired.JobID, Attempt: 1, WorkerID: silent, Since: since(expired), Class: job.FailureWorkerLost, State: job.StateRetrying, Message: "worker lost: no heartbeat within the lease"},
		{JobID: unlisted.JobID, Attempt: 1, WorkerID: back, Since: since(unlisted), Class: job.FailureWorkerLost, State: job.StateRetrying, Message: "the agent reconnected without this attempt"},
	}
	mu.Lock()
	defer mu.Unlock()
	if d := cmp.Diff(want, ends, cmpopts.IgnoreFields(store.AttemptEnd{}, "At")); d != "" {
		t.Errorf("attempt ends (-want +got):\n%s", d)
	}
	for _, e := range ends {
		if e.At.Before(e.Since) {
			t.Errorf("attempt of job %s ends at %v, before its assignment %v", e.JobID, e.At, e.Since)
		}
	}
}
