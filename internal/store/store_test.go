package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func counts(t *testing.T, s *store.Store) (jobs, queue, events int) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []struct {
		sql string
		n   *int
	}{{"SELECT count(*) FROM jobs", &jobs}, {"SELECT count(*) FROM jobs WHERE state IN ('queued', 'retrying')", &queue}, {"SELECT count(*) FROM events", &events}} {
		if err := s.Pool.QueryRow(ctx, q.sql).Scan(q.n); err != nil {
			t.Fatal(err)
		}
	}
	return
}

// TestCreateJobIsAtomic injects an error after each stage of the create
// transaction: nothing may remain of the job.
func TestCreateJobIsAtomic(t *testing.T) {
	t.Parallel()
	for _, stage := range []string{"job", "event"} {
		t.Run(stage, func(t *testing.T) {
			t.Parallel()
			s := storetest.Open(t)
			boom := errors.New("injected")
			store.SetCreateHook(s, func(st string) error {
				if st == stage {
					return boom
				}
				return nil
			})
			_, _, err := s.CreateJob(context.Background(), job.Spec{Command: []string{"true"}}, 1)
			if !errors.Is(err, boom) {
				t.Fatalf("CreateJob error = %v, want the injected one", err)
			}
			if j, q, e := counts(t, s); j != 0 || q != 0 || e != 0 {
				t.Fatalf("after failed create: jobs=%d queue=%d events=%d, want all 0", j, q, e)
			}
			store.SetCreateHook(s, nil)
			if _, _, err := s.CreateJob(context.Background(), job.Spec{Command: []string{"true"}}, 1); err != nil {
				t.Fatal(err)
			}
			if j, q, e := counts(t, s); j != 1 || q != 1 || e != 1 {
				t.Fatalf("after create: jobs=%d queue=%d events=%d, want all 1", j, q, e)
			}
		})
	}
}

func TestCreateJobRejectsInvalidSpecAndWritesNothing(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	_, _, err := s.CreateJob(context.Background(), job.Spec{}, 1)
	var fe *job.FieldError
	if !errors.As(err, &fe) || fe.Field != "command" {
		t.Fatalf("error = %v, want a FieldError on command", err)
	}
	if j, q, e := counts(t, s); j != 0 || q != 0 || e != 0 {
		t.Fatalf("jobs=%d queue=%d events=%d, want all 0", j, q, e)
	}
}

func TestIdempotencyKeyReturnsTheSameJob(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	spec := job.Spec{Command: []string{"true"}, IdempotencyKey: "k1"}
	a, existing, err := s.CreateJob(context.Background(), spec, 1)
	if err != nil || existing {
		t.Fatalf("first: %v existing=%v", err, existing)
	}
	b, existing, err := s.CreateJob(context.Background(), spec, 1)
	if err != nil || !existing || b.ID != a.ID {
		t.Fatalf("second: id=%s existing=%v err=%v, want id=%s existing", b.ID, existing, err, a.ID)
	}
	if j, _, _ := counts(t, s); j != 1 {
		t.Fatalf("jobs=%d, want 1", j)
	}
}

func TestStaleResultIsRejected(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, Retry: job.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	w1 := storetest.ConnectedWorker(t, s)
	w2 := storetest.ConnectedWorker(t, s)
	a1, err := s.Claim(ctx, store.WorkerMatch{ID: w1}, 1)
	if err != nil || len(a1) != 1 {
		t.Fatalf("claim 1: %v %v", a1, err)
	}
	if err := s.StartAttempt(ctx, jid(a1[0]), a1[0].Token); err != nil {
		t.Fatal(err)
	}
	// Worker 1 is lost; the job is retried on worker 2.
	if _, err := s.WorkerGone(ctx, w1, "disconnected", "test", false); err != nil {
		t.Fatal(err)
	}
	var a2 []store.Assignment
	deadline := time.Now().Add(5 * time.Second)
	for len(a2) == 0 && time.Now().Before(deadline) { // backoff of 1ms
		if a2, err = s.Claim(ctx, store.WorkerMatch{ID: w2}, 1); err != nil {
			t.Fatal(err)
		}
	}
	if len(a2) != 1 || a2[0].Attempt != 2 || a2[0].Token == a1[0].Token {
		t.Fatalf("second claim = %+v, want attempt 2 with a new token", a2)
	}
	// Worker 1's late reports are all rejected.
	if err := s.StartAttempt(ctx, jid(a1[0]), a1[0].Token); !errors.Is(err, job.ErrStale) {
		t.Errorf("late start: %v, want ErrStale", err)
	}
	stale, err := s.AppendLogBatches(ctx, []store.LogBatchIn{{JobID: jid(a1[0]), Token: a1[0].Token, Seq: 1, Lines: 1, Data: []byte("x")}})
	if err != nil || !stale[a1[0].Token] {
		t.Errorf("late logs: stale=%v err=%v, want stale", stale, err)
	}
	if out, err := s.FinishAttempt(ctx, jid(a1[0]), a1[0].Token, store.Result{ExitCode: 0}); !errors.Is(err, job.ErrStale) {
		t.Errorf("late finish: %+v %v, want ErrStale", out, err)
	}
	if n := s.StaleReports(); n != 3 {
		t.Errorf("StaleReports() = %d, want 3", n)
	}
	got, err := s.GetJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != job.StateAssigned || got.Attempt != 2 {
		t.Fatalf("job after late reports: state=%s attempt=%d, want assigned/2", got.State, got.Attempt)
	}
	if got.Attempts[0].FailureClass != job.FailureWorkerLost {
		t.Errorf("attempt 1 class = %q, want worker_lost", got.Attempts[0].FailureClass)
	}
	// The current attempt's result is accepted.
	if out, err := s.FinishAttempt(ctx, jid(a2[0]), a2[0].Token, store.Result{ExitCode: 0}); err != nil || out.State != job.StateSucceeded {
		t.Fatalf("current finish: %+v %v", out, err)
	}
}

// TestListJobsPagesWithoutGapsUnderInserts pages through 1,000 jobs while
// other jobs are inserted: every job that existed before is seen exactly
// once.
func TestListJobsPagesWithoutGapsUnderInserts(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	want := map[string]bool{}
	for i := 0; i < 1000; i++ {
		j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		want[j.ID] = true
	}
	stop := make(chan struct{})
	inserted := make(chan int)
	go func() {
		n := 0
		defer func() { inserted <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	seen := map[string]bool{}
	f := store.ListFilter{Limit: 37}
	for pages := 0; ; pages++ {
		page, err := s.ListJobs(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page {
			if seen[j.ID] {
				t.Fatalf("job %s listed twice", j.ID)
			}
			seen[j.ID] = true
		}
		if len(page) < f.Limit {
			break
		}
		last := page[len(page)-1]
		f.AfterID = last.ID
	}
	close(stop)
	n := <-inserted
	for id := range want {
		if !seen[id] {
			t.Fatalf("job %s missing from the listing", id)
		}
	}
	t.Logf("listed %d jobs while %d were inserted", len(seen), n)
}

// TestLogCapTruncatesWithAMarker: past the per-job cap, one truncation
// marker is stored and later batches are dropped (but accepted).
func TestLogCapTruncatesWithAMarker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{URL: storetest.URL(t), LogCapBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
		t.Fatal(err)
	}
	w := storetest.ConnectedWorker(t, s)
	as, err := s.Claim(ctx, store.WorkerMatch{ID: w}, 1)
	if err != nil || len(as) != 1 {
		t.Fatalf("claim: %v %v", as, err)
	}
	tok := as[0].Token
	batch := func(seq int64) store.LogBatchIn {
		return store.LogBatchIn{JobID: jid(as[0]), Token: tok, Seq: seq, Lines: 1, Data: []byte(strings.Repeat("x", 40))}
	}
	for seq := int64(1); seq <= 5; seq++ {
		if stale, err := s.AppendLogBatches(ctx, []store.LogBatchIn{batch(seq)}); err != nil || len(stale) > 0 {
			t.Fatalf("batch %d: stale=%v err=%v", seq, stale, err)
		}
	}
	recs, err := s.ReadLogs(ctx, as[0].JobID, 0, 0, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	// 40 + 40 fit in 100; the third is replaced by the marker; 4 and 5 are dropped.
	if len(recs) != 3 || string(recs[0].Data) != strings.Repeat("x", 40) {
		t.Fatalf("stored %d batches, want 2 of output and the marker", len(recs))
	}
	if !strings.Contains(string(recs[2].Data), "log truncated") {
		t.Fatalf("third batch %q is not the truncation marker", recs[2].Data)
	}
}

func TestClaimSkipsWorkersThatAreNotConnected(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
		t.Fatal(err)
	}
	w, _, _ := s.NewWorker(ctx, "test", "", nil, time.Minute) // provisioning, never connected
	if as, err := s.Claim(ctx, store.WorkerMatch{ID: w}, 1); err != nil || len(as) != 0 {
		t.Fatalf("claim for a worker that is not connected: %v %v", as, err)
	}
	if as, err := s.Claim(ctx, store.WorkerMatch{ID: storetest.ConnectedWorker(t, s)}, 1); err != nil || len(as) != 1 {
		t.Fatalf("claim for a connected worker: %v %v", as, err)
	}
}

// TestApplyReportsBatch: results in one batch are applied together, each
// with its own outcome: success (with its start merged in), a final
// failure, a retry (the one-by-one path), a duplicate and a stale token.
func TestApplyReportsBatch(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	retry := job.RetryPolicy{MaxAttempts: 2, RetryableExitCodes: []int32{7}}
	var ids []string
	for i := 0; i < 4; i++ {
		j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, Retry: retry}, 1)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	w := storetest.ConnectedWorker(t, s)
	as, err := s.Claim(ctx, store.WorkerMatch{ID: w}, 4)
	if err != nil || len(as) != 4 {
		t.Fatalf("claim: %v %v", as, err)
	}
	tok := map[string]int64{}
	for _, a := range as {
		tok[a.JobID] = a.Token
	}
	ok, fail, again := store.Result{}, store.Result{ExitCode: 3}, store.Result{ExitCode: 7}
	reports := []store.Report{
		{JobID: uuid.MustParse(ids[0]), Token: tok[ids[0]], Start: true},
		{JobID: uuid.MustParse(ids[0]), Token: tok[ids[0]], Finish: &ok},
		{JobID: uuid.MustParse(ids[1]), Token: tok[ids[1]], Finish: &fail},
		{JobID: uuid.MustParse(ids[2]), Token: tok[ids[2]], Finish: &again},
		{JobID: uuid.MustParse(ids[3]), Token: tok[ids[3]], Finish: &ok},
		{JobID: uuid.MustParse(ids[3]), Token: tok[ids[3]], Finish: &ok},
		{JobID: uuid.New(), Token: 987654321, Finish: &ok},
		{JobID: uuid.MustParse(ids[0]), Token: tok[ids[1]], Finish: &ok}, // a token of another job
	}
	out, err := s.ApplyReports(ctx, reports)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		stale, dup bool
		state      job.State
	}{{}, {state: job.StateSucceeded}, {state: job.StateFailed}, {state: job.StateRetrying}, {state: job.StateSucceeded}, {dup: true, state: job.StateSucceeded}, {stale: true}, {stale: true}}
	for i, w := range want {
		if out[i].Stale != w.stale || out[i].Outcome.Duplicate != w.dup || out[i].Outcome.State != w.state {
			t.Errorf("report %d: %+v, want stale=%v duplicate=%v state=%q", i, out[i], w.stale, w.dup, w.state)
		}
	}
	states := []job.State{job.StateSucceeded, job.StateFailed, job.StateRetrying, job.StateSucceeded}
	for i, id := range ids {
		j, err := s.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != states[i] {
			t.Errorf("job %d: %s, want %s", i, j.State, states[i])
		}
	}
	j0, _ := s.GetJob(ctx, ids[0])
	if j0.Attempts[0].StartedAt.IsZero() || j0.FinishedAt.IsZero() {
		t.Errorf("job 0: started %v finished %v, want both set", j0.Attempts[0].StartedAt, j0.FinishedAt)
	}
	var started, completed, failed, retries int
	if err := s.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE type = 'JobStarted'), count(*) FILTER (WHERE type = 'JobCompleted'),
		count(*) FILTER (WHERE type = 'JobFailed'), count(*) FILTER (WHERE type = 'JobRetryScheduled') FROM events`).Scan(&started, &completed, &failed, &retries); err != nil {
		t.Fatal(err)
	}
	if started != 1 || completed != 2 || failed != 2 || retries != 1 {
		t.Errorf("events: started=%d completed=%d failed=%d retry=%d, want 1, 2, 2, 1", started, completed, failed, retries)
	}
}

// TestClaimSlotsSpreadsJobsOverConnectedWorkers: one claim fills the slots
// of several workers in order; a worker that is not connected gets none.
func TestClaimSlotsSpreadsJobsOverConnectedWorkers(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	var ids []string
	for _, prio := range []int32{0, 5, 0, 9, 0} {
		j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, Priority: prio}, 1)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	a, b := storetest.ConnectedWorker(t, s), storetest.ConnectedWorker(t, s)
	gone, _, _ := s.NewWorker(ctx, "test", "", nil, time.Minute)
	as, err := s.ClaimSlots(ctx, store.WorkerMatch{}, []string{a, b, gone, a})
	if err != nil {
		t.Fatal(err)
	}
	var got, jobs []string
	for _, x := range as {
		got = append(got, x.WorkerID)
		jobs = append(jobs, x.JobID)
		// The attempt row says the same as the assignment.
		var worker string
		var token int64
		if err := s.Pool.QueryRow(ctx, "SELECT worker_id::text, token FROM attempts WHERE job_id = $1", x.JobID).Scan(&worker, &token); err != nil {
			t.Fatal(err)
		}
		if worker != x.WorkerID || token != x.Token {
			t.Fatalf("job %s: attempt row has worker %s token %d, assignment says %s and %d", x.JobID, worker, token, x.WorkerID, x.Token)
		}
	}
	if want := []string{a, b, a}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("claimed for %v, want %v (the slot of the worker that is not connected skipped)", got, want)
	}
	// Priority first, then submission order: the k-th job has the k-th slot.
	if want := []string{ids[3], ids[1], ids[0]}; strings.Join(jobs, ",") != strings.Join(want, ",") {
		t.Fatalf("claimed jobs %v, want %v", jobs, want)
	}
	var queued int
	if err := s.Pool.QueryRow(ctx, "SELECT count(*) FROM jobs WHERE state IN ('queued', 'retrying')").Scan(&queued); err != nil {
		t.Fatal(err)
	}
	if queued != 2 {
		t.Fatalf("%d jobs left in the queue, want 2", queued)
	}
}

// TestClaimRespectsWorkerLimits: a job needing more CPU or memory than a
// worker allows per job is not given to it.
func TestClaimRespectsWorkerLimits(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	big, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, CPUMillis: 2000, MemoryMiB: 64}, 1)
	if err != nil {
		t.Fatal(err)
	}
	small, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, CPUMillis: 500, MemoryMiB: 64}, 1)
	if err != nil {
		t.Fatal(err)
	}
	w := store.WorkerMatch{ID: storetest.ConnectedWorker(t, s), CPUMillis: 1000, MemoryMiB: 128}
	as, err := s.Claim(ctx, w, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 1 || as[0].JobID != small.ID {
		t.Fatalf("claimed %+v, want only the 500m job", as)
	}
	if as, err := s.Claim(ctx, store.WorkerMatch{ID: storetest.ConnectedWorker(t, s)}, 2); err != nil || len(as) != 1 || as[0].JobID != big.ID {
		t.Fatalf("a worker without stated limits claimed %+v (%v), want the 2000m job", as, err)
	}
}

// TestApplyReportsRollsBackAFailedBatch: when one of the writes sent with
// the commit fails (here PostgreSQL refuses a message with a NUL byte),
// nothing of the batch stays: no attempt or job changed, no event; and the
// next batch on the pool applies normally.
func TestApplyReportsRollsBackAFailedBatch(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 2; i++ {
		j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	as, err := s.Claim(ctx, store.WorkerMatch{ID: storetest.ConnectedWorker(t, s)}, 2)
	if err != nil || len(as) != 2 {
		t.Fatalf("claim: %v %v", as, err)
	}
	_, _, before := counts(t, s)
	bad := store.Result{ExitCode: 1, Message: "nul \x00 byte"}
	ok := store.Result{}
	if _, err := s.ApplyReports(ctx, []store.Report{{JobID: jid(as[0]), Token: as[0].Token, Start: true}, {JobID: jid(as[1]), Token: as[1].Token, Finish: &ok}, {JobID: jid(as[0]), Token: as[0].Token, Finish: &bad}}); err == nil || !strings.Contains(err.Error(), "transaction write") {
		t.Fatalf("got %v, want the error of a write sent with the commit", err)
	}
	if _, _, after := counts(t, s); after != before {
		t.Fatalf("events: %d after the failed batch, %d before", after, before)
	}
	for _, id := range ids {
		j, err := s.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != job.StateAssigned || !j.Attempts[0].StartedAt.IsZero() {
			t.Fatalf("job %s: %s started=%v after the failed batch, want assigned and not started", id, j.State, j.Attempts[0].StartedAt)
		}
	}
	for range 10 { // more batches than the pool has connections in use
		if _, err := s.ApplyReports(ctx, []store.Report{{JobID: uuid.New(), Token: 987654321, Start: true}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ApplyReports(ctx, []store.Report{{JobID: jid(as[0]), Token: as[0].Token, Finish: &ok}, {JobID: jid(as[1]), Token: as[1].Token, Finish: &ok}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if j, _ := s.GetJob(ctx, id); j.State != job.StateSucceeded {
			t.Fatalf("job %s: %s, want succeeded", id, j.State)
		}
	}
}

// TestUUIDsAreSentAsBytes: a store connection encodes uuid.UUID values with the binary uuid codec rather than the type's
// string-producing driver.Valuer, and the values survive the round trip.
func TestUUIDsAreSentAsBytes(t *testing.T) {
	s := storetest.Open(t)
	ctx := context.Background()
	c, err := s.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	m := c.Conn().TypeMap()
	// Arrays plan their elements through the same map, so the element
	// plan is what matters.
	if plan := m.PlanEncode(pgtype.UUIDOID, pgtype.BinaryFormatCode, uuid.New()); plan == nil || strings.Contains(fmt.Sprintf("%T", plan), "DriverValuer") {
		t.Errorf("uuid.UUID is encoded by %T", plan)
	}
	ids := []uuid.UUID{uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())}
	var got []uuid.UUID
	if err := c.QueryRow(ctx, "SELECT $1::uuid[]", ids).Scan(&got); err != nil {
		t.Fatal(err)
	}
	var one string
	if err := c.QueryRow(ctx, "SELECT $1::uuid::text", ids[0]).Scan(&one); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] || one != ids[0].String() {
		t.Fatalf("round trip: sent %v, got %v and %s", ids, got, one)
	}
}

// TestConcurrentSubmissionsOfOneKeyMakeOneJob: submissions racing with the
// same idempotency key all get the one job the unique index lets through.
func TestConcurrentSubmissionsOfOneKeyMakeOneJob(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	spec := job.Spec{Command: []string{"true"}, IdempotencyKey: "race"}
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var j job.Job
			j, _, errs[i] = s.CreateJob(context.Background(), spec, 1)
			ids[i] = j.ID
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("submission %d: id=%s err=%v, want id=%s", i, ids[i], errs[i], ids[0])
		}
	}
	if j, _, _ := counts(t, s); j != 1 {
		t.Fatalf("jobs=%d, want 1", j)
	}
}

// TestHeartbeatsAndClaimsDoNotDeadlock: the heartbeat write and a claim
// lock the same worker rows; taken in different orders, the two deadlock
// and PostgreSQL breaks it only after deadlock_timeout (a second in which
// dispatch stands still). Both must lock in id order. Two of each run for
// two seconds; before the fix this failed in every run.
func TestHeartbeatsAndClaimsDoNotDeadlock(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	var ids []string
	for range 8 {
		ids = append(ids, storetest.ConnectedWorker(t, s))
	}
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 2 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				seen := map[string]time.Time{}
				for _, id := range ids {
					seen[id] = time.Now()
				}
				if _, err := s.TouchWorkers(ctx, seen); err != nil {
					errs <- fmt.Errorf("heartbeats: %w", err)
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				// Slots in a shuffled order: the claim must not lock in it.
				slots := slices.Clone(ids)
				rand.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
				if _, err := s.ClaimSlots(ctx, store.WorkerMatch{}, slots); err != nil {
					errs <- fmt.Errorf("claim: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestResultBatchesNeverRescanTheBatch: the statement that ends a batch of
// attempts joins its rows with the batch by hash (or merge), and the one
// that starts attempts does not join them at all: never a nested loop,
// which rescans the whole batch for every row it updates. That quadratic
// plan is what PostgreSQL caches for a table that was
// nearly empty and never analyzed when the statement was first planned (a
// fresh install), and it cost 270 ms for one batch of 744 results. Here
// the plans are made on such tables (one connection, generic plans) and
// then read back from the connection's prepared statements.
func TestResultBatchesNeverRescanTheBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, err := url.Parse(storetest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("plan_cache_mode", "force_generic_plan")
	u.RawQuery = q.Encode()
	s, err := store.Open(ctx, store.Config{URL: u.String(), MaxConns: 1, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w := storetest.ConnectedWorker(t, s)
	for i := 0; i < 40; i++ {
		if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
			t.Fatal(err)
		}
	}
	as, err := s.Claim(ctx, store.WorkerMatch{ID: w}, 40)
	if err != nil || len(as) != 40 {
		t.Fatalf("claim: %d attempts, %v", len(as), err)
	}
	// Starts alone first (StartJobAttempts), then the results.
	ok := store.Result{}
	var starts, results []store.Report
	for _, a := range as {
		starts = append(starts, store.Report{JobID: jid(a), Token: a.Token, Start: true})
		results = append(results, store.Report{JobID: jid(a), Token: a.Token, Finish: &ok})
	}
	if out, err := s.ApplyReports(ctx, starts); err != nil {
		t.Fatal(err)
	} else {
		for i, o := range out {
			if o.Stale {
				t.Fatalf("start %d: stale", i)
			}
		}
	}
	out, err := s.ApplyReports(ctx, results)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if o.Stale || o.Outcome.State != job.StateSucceeded {
			t.Fatalf("report %d: %+v, want succeeded", i, o)
		}
	}
	for _, name := range []string{"StartJobAttempts", "FinishJobs"} {
		var stmt string
		var params int
		if err := s.Pool.QueryRow(ctx, `SELECT name, cardinality(parameter_types) FROM pg_prepared_statements WHERE statement LIKE '%name: ' || $1 || ' %'`, name).Scan(&stmt, &params); err != nil {
			t.Fatalf("%s: the prepared statement: %v", name, err)
		}
		args := strings.TrimSuffix(strings.Repeat("NULL, ", params), ", ")
		rows, err := s.Pool.Query(ctx, fmt.Sprintf("EXPLAIN EXECUTE %s(%s)", pgx.Identifier{stmt}.Sanitize(), args))
		if err != nil {
			t.Fatal(err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		if strings.Contains(text, "Nested Loop") {
			t.Errorf("%s joins its batch by a nested loop:\n%s", name, text)
		}
	}
}
