package store_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestDeleteFinishedJobs: only jobs that finished before the cutoff go,
// oldest first and at most the limit per call, with their log batches;
// jobs still waiting or running stay, however old.
func TestDeleteFinishedJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var clock atomic.Int64
	clock.Store(time.Now().Add(-40 * 24 * time.Hour).UnixNano())
	s, err := store.Open(ctx, store.Config{URL: storetest.URL(t), Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 40 days ago: three jobs finish (with a log batch each), one waits.
	old := finishJobs(t, s, 3)
	waiting, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Today: one more finishes.
	clock.Store(time.Now().UnixNano())
	recent := finishJobs(t, s, 1)

	cutoff := time.Now().Add(-30 * 24 * time.Hour)
	if n, err := s.DeleteFinishedJobs(ctx, cutoff, 2); err != nil || n != 2 {
		t.Fatalf("first batch: deleted %d (%v), want 2", n, err)
	}
	if n, err := s.DeleteFinishedJobs(ctx, cutoff, 2); err != nil || n != 1 {
		t.Fatalf("second batch: deleted %d (%v), want 1", n, err)
	}
	if n, err := s.DeleteFinishedJobs(ctx, cutoff, 2); err != nil || n != 0 {
		t.Fatalf("third batch: deleted %d (%v), want 0", n, err)
	}
	for _, id := range old {
		if _, err := s.GetJob(ctx, id); err == nil {
			t.Errorf("job %s finished 40 days ago is still there", id)
		}
	}
	for _, id := range append(recent, waiting.ID) {
		if _, err := s.GetJob(ctx, id); err != nil {
			t.Errorf("job %s: %v, want it kept", id, err)
		}
	}
	var logs int
	if err := s.SQLForTests().QueryRow(ctx, "SELECT count(*) FROM job_logs").Scan(&logs); err != nil {
		t.Fatal(err)
	}
	if logs != 1 {
		t.Errorf("%d log batches left, want the recent job's 1", logs)
	}
}

// finishJobs creates n jobs, runs each to success with one log batch,
// and returns their ids.
func finishJobs(t *testing.T, s *store.Store, n int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for range n {
		j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	w := storetest.ConnectedWorker(t, s)
	as, err := s.Claim(ctx, store.WorkerMatch{ID: w}, n)
	if err != nil || len(as) != n {
		t.Fatalf("claim: %v %v", as, err)
	}
	ok := store.Result{}
	var reports []store.Report
	for _, a := range as {
		if _, err := s.AppendLogBatches(ctx, []store.LogBatchIn{{JobID: uuid.MustParse(a.JobID), Token: a.Token, Seq: 1, Lines: 1, Data: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		reports = append(reports, store.Report{JobID: uuid.MustParse(a.JobID), Token: a.Token, Finish: &ok})
	}
	if _, err := s.ApplyReports(ctx, reports); err != nil {
		t.Fatal(err)
	}
	return ids
}
