package storetest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestDatabases: without TEST_DATABASE_URL the package starts a private
// cluster; every URL is a fresh migrated database of its own, dropped
// when its test ends; Open and ConnectedWorker give a store with a
// connected worker on one.
func TestDatabases(t *testing.T) {
	// The first URL sets the cluster up for the whole run.
	t.Setenv("TEST_DATABASE_URL", "")
	ctx := context.Background()
	var first string
	t.Run("isolated", func(t *testing.T) {
		first = URL(t)
		second := URL(t)
		if first == second {
			t.Fatalf("two URLs name the same database %s", first)
		}
		a := connect(t, first)
		if _, err := a.Exec(ctx, "CREATE TABLE mine (x int)"); err != nil {
			t.Fatal(err)
		}
		var migrations, tables int
		b := connect(t, second)
		if err := b.QueryRow(ctx, "SELECT (SELECT count(*) FROM schema_migrations), (SELECT count(*) FROM pg_tables WHERE tablename = 'mine')").Scan(&migrations, &tables); err != nil {
			t.Fatal(err)
		}
		if migrations == 0 || tables != 0 {
			t.Errorf("second database: %d migrations, %d tables named mine; want migrated and without the first's table", migrations, tables)
		}
	})
	if cluster == nil {
		t.Error("no private cluster started without TEST_DATABASE_URL")
	}
	if c, err := pgx.Connect(ctx, first); err == nil {
		c.Close(ctx)
		t.Errorf("database %s still there after its test", first)
	}

	s := Open(t)
	id := ConnectedWorker(t, s)
	if w, err := s.GetWorker(ctx, id); err != nil || w.State != "connected" || w.Slots != 1 {
		t.Errorf("worker %s: %+v, %v; want connected with one slot", id, w, err)
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}
