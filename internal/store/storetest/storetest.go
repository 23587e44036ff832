// Package storetest gives tests a real, isolated PostgreSQL database.
//
// One cluster serves a whole `go test` run: the one named by
// TEST_DATABASE_URL (make test starts it), or else a private cluster that
// Main starts for the package and stops after it. Every test gets a fresh
// database cloned from a migrated template, so tests run in parallel and
// LISTEN/NOTIFY channels never cross between them.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/store"
)

type harness struct {
	admin    string // URL of the maintenance database
	template string // name of the migrated template database
	err      error
}

var (
	once    sync.Once
	shared  harness
	cluster *pgembed.Cluster
)

// Main runs the package's tests against a shared cluster. Call it from
// TestMain: func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	if cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cluster.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "storetest: stop cluster:", err)
		}
	}
	return code
}

func setup() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		c, err := pgembed.Start(ctx, TestConfig())
		if err != nil {
			shared.err = err
			return
		}
		cluster = c
		admin = c.URL("postgres")
	}
	shared.admin = admin
	shared.template = "hodei_tmpl_" + randomName()
	if err := exec(ctx, admin, "CREATE DATABASE "+shared.template); err != nil {
		shared.err = err
		return
	}
	pool, err := pgxpool.New(ctx, withDB(admin, shared.template))
	if err != nil {
		shared.err = err
		return
	}
	defer pool.Close()
	shared.err = store.Migrate(ctx, pool)
}

// TestConfig is the cluster configuration for tests: durability off,
// since a test cluster's data is thrown away.
func TestConfig() pgembed.Config {
	return pgembed.Config{Settings: pgembed.ThrowawaySettings()}
}

// URL returns the URL of a fresh, migrated database dropped after the test.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(setup)
	if shared.err != nil {
		t.Fatalf("storetest: %v", shared.err)
	}
	name := "hodei_test_" + randomName()
	ctx := context.Background()
	if err := exec(ctx, shared.admin, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, shared.template)); err != nil {
		t.Fatalf("storetest: create database: %v", err)
	}
	t.Cleanup(func() {
		if err := exec(context.Background(), shared.admin, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Logf("storetest: drop database %s: %v", name, err)
		}
	})
	return withDB(shared.admin, name)
}

// Open returns a store on a fresh database, closed after the test.
func Open(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Config{URL: URL(t), Logger: Logger(t)})
	if err != nil {
		t.Fatalf("storetest: open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// ConnectedWorker registers, enrolls (one slot) and connects a worker on
// s, as the server does for an agent, and returns its id.
func ConnectedWorker(t testing.TB, s *store.Store) string {
	t.Helper()
	ctx := context.Background()
	id, token, err := s.NewWorker(ctx, "test", "", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, cred, _, err := s.Enroll(ctx, store.Enrollment{Token: token, Hostname: "host", Version: "test", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConnectWorker(ctx, id, cred, "", "test", false); err != nil {
		t.Fatal(err)
	}
	return id
}

// Logger routes slog output to t.Log until the test's cleanups run, and
// to standard error after that: a goroutine of the code under test (a
// timer) may still log once the test is over, which t.Log does not allow.
func Logger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.over = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	t    testing.TB
	mu   sync.Mutex
	over bool // the test's cleanups have run
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.over {
		fmt.Fprintf(os.Stderr, "%s (after the test): %s", w.t.Name(), p)
		return len(p), nil
	}
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func exec(ctx context.Context, dbURL, sql string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

func withDB(u, name string) string {
	p, err := url.Parse(u)
	if err != nil {
		panic(err)
	}
	p.Path = "/" + name
	return p.String()
}

func randomName() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}
