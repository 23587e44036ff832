package store_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

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
	if err := s.SQLForTests().QueryRow(ctx, `SELECT count(*) FILTER (WHERE type = 'JobStarted'), count(*) FILTER (WHERE type = 'JobCompleted'),
		count(*) FILTER (WHERE type = 'JobFailed'), count(*) FILTER (WHERE type = 'JobRetryScheduled') FROM events`).Scan(&started, &completed, &failed, &retries); err != nil {
		t.Fatal(err)
	}
	if started != 1 || completed != 2 || failed != 2 || retries != 1 {
		t.Errorf("events: started=%d completed=%d failed=%d retry=%d, want 1, 2, 2, 1", started, completed, failed, retries)
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
		if err := s.SQLForTests().QueryRow(ctx, `SELECT name, cardinality(parameter_types) FROM pg_prepared_statements WHERE statement LIKE '%name: ' || $1 || ' %'`, name).Scan(&stmt, &params); err != nil {
			t.Fatalf("%s: the prepared statement: %v", name, err)
		}
		args := strings.TrimSuffix(strings.Repeat("NULL, ", params), ", ")
		rows, err := s.SQLForTests().Query(ctx, fmt.Sprintf("EXPLAIN EXECUTE %s(%s)", pgx.Identifier{stmt}.Sanitize(), args))
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

// TestApplyReportsClassifiesEarlierAttempts: a result re-sent for an
// attempt that a later one replaced is a duplicate (acknowledged, nothing
// changes), unless the server had given that attempt up as lost (stale),
// in the same batch as the current attempt's result.
func TestApplyReportsClassifiesEarlierAttempts(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	retry := job.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, RetryableExitCodes: []int32{1}}
	failed, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"false"}, Retry: retry}, 1)
	if err != nil {
		t.Fatal(err)
	}
	w := storetest.ConnectedWorker(t, s)
	claim := func(id string) store.Assignment {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) { // backoffs of 1 ms
			as, err := s.Claim(ctx, store.WorkerMatch{ID: w}, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(as) == 1 {
				if as[0].JobID != id {
					t.Fatalf("claimed job %s, want %s", as[0].JobID, id)
				}
				return as[0]
			}
		}
		t.Fatalf("job %s never claimed", id)
		return store.Assignment{}
	}
	first := claim(failed.ID)
	exit1 := store.Result{ExitCode: 1}
	out, err := s.ApplyReports(ctx, []store.Report{{JobID: jid(first), Token: first.Token, Finish: &exit1}})
	if err != nil || out[0].Stale || out[0].Outcome.State != job.StateRetrying {
		t.Fatalf("first result: %+v %v, want retrying", out, err)
	}
	second := claim(failed.ID)

	lost, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, Retry: retry}, 1) // worker_lost is retried by default
	if err != nil {
		t.Fatal(err)
	}
	lostFirst := claim(lost.ID)
	if _, err := s.FinishAttempt(ctx, jid(lostFirst), lostFirst.Token, store.Result{ExitCode: -1, Class: job.FailureWorkerLost, Message: "lost"}); err != nil {
		t.Fatal(err)
	}
	lostSecond := claim(lost.ID)

	ok := store.Result{}
	out, err = s.ApplyReports(ctx, []store.Report{
		{JobID: jid(first), Token: first.Token, Finish: &exit1},        // re-sent: a duplicate
		{JobID: jid(lostFirst), Token: lostFirst.Token, Finish: &ok},   // given up as lost: stale
		{JobID: jid(second), Token: second.Token, Finish: &ok},         // current
		{JobID: jid(lostSecond), Token: lostSecond.Token, Finish: &ok}, // current
	})
	if err != nil {
		t.Fatal(err)
	}
	if o := out[0]; o.Stale || !o.Outcome.Duplicate || o.Outcome.State != job.StateFailed {
		t.Errorf("re-sent result of a replaced attempt: %+v, want a duplicate (failed)", o)
	}
	if o := out[1]; !o.Stale {
		t.Errorf("late result of a lost attempt: %+v, want stale", o)
	}
	for i := 2; i < 4; i++ {
		if o := out[i]; o.Stale || o.Outcome.State != job.StateSucceeded {
			t.Errorf("report %d (current attempt): %+v, want succeeded", i, o)
		}
	}
	for _, id := range []string{failed.ID, lost.ID} {
		j, err := s.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != job.StateSucceeded || len(j.Attempts) != 2 || j.Attempts[1].State != job.StateSucceeded || j.Attempts[0].State != job.StateFailed {
			t.Errorf("job %s: state %s, attempts %+v; want succeeded with a failed then a succeeded attempt", id, j.State, j.Attempts)
		}
	}
}
