package store_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
	if _, err := s.SQLForTests().Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.SQLForTests().Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)") }) //nolint:errcheck
	u, err := url.Parse(s.SQLForTests().Config().ConnString())
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

// TestMigrateAppliesAMigrationNumberedBelowTheLatest: a database whose
// latest applied migration is numbered above one it lacks (branches
// merged out of order) gets the missing one at the next start.
func TestMigrateAppliesAMigrationNumberedBelowTheLatest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := databaseAt(t, 1<<30)
	for _, sql := range []string{"DROP TABLE job_types", "DELETE FROM schema_migrations WHERE version = 17"} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM job_types").Scan(&n); err != nil {
		t.Fatalf("migration 17 not applied again: %v", err)
	}
}
