package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestRetriedAttemptDoesNotShowThePreviousFailure: while a job waits out
// its backoff it shows why its attempt failed; once its next attempt is
// claimed, the job shows no failure of its own, and the failure stays on
// the attempt that had it.
func TestRetriedAttemptDoesNotShowThePreviousFailure(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	// No max_attempts: the platform's default budget.
	j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, Retry: job.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}}, job.DefaultMaxAttempts)
	if err != nil {
		t.Fatal(err)
	}
	w := storetest.ConnectedWorker(t, s)
	first := claimOne(t, s, w)
	if _, err := s.FinishAttempt(ctx, jid(first), first.Token, store.Result{ExitCode: -1, Class: job.FailureWorkerLost, Message: "lost"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != job.StateRetrying || got.FailureClass != job.FailureWorkerLost || got.Message != "lost" {
		t.Fatalf("after the lost attempt: %s %q %q, want retrying after worker_lost", got.State, got.FailureClass, got.Message)
	}
	second := claimOne(t, s, w)
	if err := s.StartAttempt(ctx, jid(second), second.Token); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != job.StateRunning || got.FailureClass != job.FailureNone || got.Message != "" || got.ExitCode != 0 {
		t.Errorf("running retry: state %s, failure %q %q exit %d; want running without a failure", got.State, got.FailureClass, got.Message, got.ExitCode)
	}
	if len(got.Attempts) != 2 || got.Attempts[0].FailureClass != job.FailureWorkerLost || got.Attempts[0].Message != "lost" || got.Attempts[1].FailureClass != job.FailureNone {
		t.Errorf("attempts %+v, want the first lost, the second without a failure", got.Attempts)
	}
}

// claimOne claims the one ready job for worker w, waiting out short backoffs.
func claimOne(t *testing.T, s *store.Store, w string) store.Assignment {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		as, err := s.Claim(context.Background(), store.WorkerMatch{ID: w}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(as) == 1 {
			return as[0]
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no job claimed")
	return store.Assignment{}
}
