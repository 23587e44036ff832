package scheduler_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/scheduler"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// TestJobRetentionWorksOffABacklog: the duty deletes every job finished
// before the retention, in as many batches as it takes, and keeps the
// rest.
func TestJobRetentionWorksOffABacklog(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := storetest.Open(t)
	w := storetest.ConnectedWorker(t, st)
	const n = 2500 // more than two batches
	specs := make([]job.Spec, n+1)
	for i := range specs {
		specs[i] = job.Spec{Command: []string{"true"}}
	}
	jobs, _, err := st.CreateJobs(ctx, specs, 1)
	if err != nil {
		t.Fatal(err)
	}
	as, err := st.Claim(ctx, store.WorkerMatch{ID: w}, n)
	if err != nil || len(as) != n {
		t.Fatalf("claim: %d %v", len(as), err)
	}
	ok := store.Result{}
	var reports []store.Report
	for _, a := range as {
		reports = append(reports, store.Report{JobID: uuid.MustParse(a.JobID), Token: a.Token, Finish: &ok})
	}
	if _, err := st.ApplyReports(ctx, reports); err != nil {
		t.Fatal(err)
	}
	// A retention of 0 makes every finished job old enough.
	done := make(chan error, 1)
	go func() { done <- scheduler.JobRetention(st, time.Hour, 0, storetest.Logger(t))(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left int
		if err := st.SQLForTests().QueryRow(ctx, "SELECT count(*) FROM jobs").Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs left, want the waiting one", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Claims go in submission order: the last job is the one waiting.
	if j, err := st.GetJob(ctx, jobs[n].ID); err != nil || j.State != job.StateQueued {
		t.Errorf("the waiting job: %+v %v, want it kept, queued", j.State, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
