package store_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// databaseAt returns a pool on a new database migrated up to the given
// schema version, dropped at the end of the test.
func databaseAt(t *testing.T, version int) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	s := storetest.Open(t)
	name := "upgrade_" + uuid.NewString()[:8]
	if _, err := s.Pool.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Pool.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)") }) //nolint:errcheck
	u, err := url.Parse(s.Pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.MigrateTo(ctx, pool, version); err != nil {
		t.Fatal(err)
	}
	return pool
}

// TestUpgradeMovesEachJobsLatestAttemptToItsRow migrates a database that
// has attempts in the schema before migration 11 (every attempt a row of
// job_attempts): each job's latest attempt moves to the job's row, the
// earlier ones stay, and the attempts view lists all of them as before.
func TestUpgradeMovesEachJobsLatestAttemptToItsRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := databaseAt(t, 10)
	done, retried, fresh := uuid.New(), uuid.New(), uuid.New()
	worker := uuid.New()
	setup := []string{
		`INSERT INTO workers (id, provider, state, created_at, updated_at) VALUES ('` + worker.String() + `', 'test', 'connected', now(), now())`,
		// done: one attempt, succeeded.
		`INSERT INTO jobs (id, spec, state, attempt, created_at, updated_at, finished_at, exit_code)
		 VALUES ('` + done.String() + `', '{}', 'succeeded', 1, now(), now(), now(), 0)`,
		`INSERT INTO job_attempts (job_id, number, token, worker_id, state, assigned_at, started_at, finished_at, exit_code)
		 VALUES ('` + done.String() + `', 1, 11, '` + worker.String() + `', 'succeeded', now(), now(), now(), 0)`,
		// retried: attempt 1 failed, attempt 2 running.
		`INSERT INTO jobs (id, spec, state, attempt, max_attempts, created_at, updated_at)
		 VALUES ('` + retried.String() + `', '{}', 'running', 2, 3, now(), now())`,
		`INSERT INTO job_attempts (job_id, number, token, worker_id, state, assigned_at, started_at, finished_at, exit_code, failure_class, message)
		 VALUES ('` + retried.String() + `', 1, 21, '` + worker.String() + `', 'failed', now(), now(), now(), 3, 'exit_code', 'exit status 3')`,
		`INSERT INTO job_attempts (job_id, number, token, worker_id, state, assigned_at, started_at)
		 VALUES ('` + retried.String() + `', 2, 22, '` + worker.String() + `', 'running', now(), now())`,
		// fresh: never claimed.
		`INSERT INTO jobs (id, spec, state, created_at, updated_at) VALUES ('` + fresh.String() + `', '{}', 'queued', now(), now())`,
	}
	for _, q := range setup {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	type row struct {
		token int64
		state string
	}
	onRow := map[uuid.UUID]*row{}
	for _, id := range []uuid.UUID{done, retried, fresh} {
		var token *int64
		var state *string
		if err := pool.QueryRow(ctx, "SELECT attempt_token, attempt_state FROM jobs WHERE id = $1", id).Scan(&token, &state); err != nil {
			t.Fatal(err)
		}
		if token != nil {
			onRow[id] = &row{*token, *state}
		}
	}
	if r := onRow[done]; r == nil || *r != (row{11, "succeeded"}) {
		t.Errorf("done job's row holds %+v, want token 11 succeeded", r)
	}
	if r := onRow[retried]; r == nil || *r != (row{22, "running"}) {
		t.Errorf("retried job's row holds %+v, want token 22 running", r)
	}
	if r := onRow[fresh]; r != nil {
		t.Errorf("unclaimed job's row holds %+v, want no attempt", r)
	}
	rows, err := pool.Query(ctx, "SELECT token FROM job_attempts ORDER BY token")
	if err != nil {
		t.Fatal(err)
	}
	left, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0] != 21 {
		t.Errorf("job_attempts holds tokens %v, want just the replaced attempt 21", left)
	}
	var all int
	var message string
	if err := pool.QueryRow(ctx, "SELECT count(*), max(message) FROM attempts").Scan(&all, &message); err != nil {
		t.Fatal(err)
	}
	if all != 3 || message != "exit status 3" {
		t.Errorf("attempts view: %d rows (max message %q), want 3 with the failed one's message", all, message)
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

// TestJobIDsCarryTheCreationTime: a job's id is a UUIDv7 of its
// created_at's millisecond, ids increase in creation order (also within a
// millisecond and when the clock goes back, where the creation time stays
// at the latest millisecond), and listing by creation time returns exactly
// the jobs created in the window, newest first.
func TestJobIDsCarryTheCreationTime(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	at := t0
	store.SetNow(s, func() time.Time { return at })
	var jobs []job.Job
	create := func(n int) {
		specs := make([]job.Spec, n)
		for i := range specs {
			specs[i] = job.Spec{Command: []string{"true"}}
		}
		js, _, err := s.CreateJobs(ctx, specs, 1)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, js...)
	}
	create(3)                            // t0
	at = t0.Add(300 * time.Microsecond)  // the same millisecond
	create(2)                            //
	at = t0.Add(1500 * time.Microsecond) // the next one
	create(1)                            //
	at = t0.Add(2 * time.Second)         // later
	create(2)                            //
	at = t0.Add(time.Second)             // the clock goes back
	create(1)                            // recorded at t0+2s
	for i, j := range jobs {
		u := uuid.MustParse(j.ID)
		sec, nsec := u.Time().UnixTime()
		if u.Version() != 7 || time.Unix(sec, nsec).UnixMilli() != j.CreatedAt.UnixMilli() {
			t.Fatalf("job %d: id %s (version %d, %d ms) for created_at %s", i, j.ID, u.Version(), time.Unix(sec, nsec).UnixMilli(), j.CreatedAt)
		}
		if i > 0 && j.ID <= jobs[i-1].ID {
			t.Fatalf("job %d: id %s not after %s", i, j.ID, jobs[i-1].ID)
		}
	}
	if got := jobs[8].CreatedAt; !got.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("created while the clock went back: %s, want %s", got, t0.Add(2*time.Second))
	}
	for _, w := range []struct {
		after, before time.Time
		want          []int // indexes into jobs, newest first
	}{
		{t0, t0.Add(time.Millisecond), []int{4, 3, 2, 1, 0}},
		{t0.Add(time.Microsecond), t0.Add(time.Millisecond), []int{4, 3}},
		{t0.Add(time.Millisecond), t0.Add(time.Second), []int{5}},
		{t0.Add(time.Second), time.Time{}, []int{8, 7, 6}},
		{time.Time{}, t0.Add(300 * time.Microsecond), []int{2, 1, 0}},
	} {
		got, err := s.ListJobs(ctx, store.ListFilter{CreatedAfter: w.after, CreatedBefore: w.before, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var ids, want []string
		for _, j := range got {
			ids = append(ids, j.ID)
		}
		for _, i := range w.want {
			want = append(want, jobs[i].ID)
		}
		if strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Errorf("created in [%s, %s): %v, want %v", w.after, w.before, ids, want)
		}
	}
}
