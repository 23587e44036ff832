//go:build chaos

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/store"
)

// startCluster starts a private PostgreSQL cluster on port (0: any) with
// a database hodei, stopped when the test ends. It keeps PostgreSQL's
// durability (fsync, synchronous commit): a crash of a cluster without it
// loses commits, and with them the record of attempts already started.
func startCluster(t *testing.T, port int) *pgembed.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := pgembed.Start(ctx, pgembed.Config{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(context.Background()) })
	if err := c.CreateDatabase(ctx, "hodei"); err != nil {
		t.Fatal(err)
	}
	return c
}

// crashRestart stops c as `pg_ctl restart -m immediate` does (SIGQUIT to
// the postmaster: no checkpoint, crash recovery at the next start) and
// starts it again on the same port and data directory.
func crashRestart(t *testing.T, c *pgembed.Cluster) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "postgres gone after SIGQUIT", func() bool { return processGone(pid) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestChaosPostgresRestartUnderLoad: PostgreSQL is restarted in immediate
// mode (a crash) under a load of 300 jobs. The servers' listeners
// resume, no event is lost (every job completes), and a job submitted once
// PostgreSQL accepts connections again starts within 5 s.
func TestChaosPostgresRestartUnderLoad(t *testing.T) {
	const jobs = 300
	pg := startCluster(t, 0)
	dbURL := pg.URL("hodei")
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", "6s")
	st := openStore(t, dbURL)
	for range 2 {
		spawnAgent(t, st, []string{p.addr}, "--slots", "8", "--grace", "1s")
	}
	c := jobClient(p.addr)
	l := newLedger(t, "postgres_restart")
	loaded := make(chan struct{})
	go func() { defer close(loaded); l.load(t, []hodeiv1connect.JobServiceClient{c}, jobs, 5) }()
	eventually(t, 60*time.Second, "a third of the jobs done", func() bool {
		return queryOne[int64](t, st, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") >= jobs/3
	})
	st.Close()
	crashRestart(t, pg)
	back := time.Now()
	started := l.probe(t, c, jobs, 30*time.Second)
	<-loaded
	l.check(t, openStore(t, dbURL), 120*time.Second, 2*time.Second, started.Sub(back))
	if d := started.Sub(back); d > 5*time.Second {
		t.Errorf("a job submitted when PostgreSQL was back started %s later, want within 5s", d)
	}
}

// TestChaosPostgresDownAtStart: `hodei server` started while PostgreSQL
// refuses connections says so clearly and keeps retrying instead of
// exiting; once PostgreSQL is up it serves and runs jobs.
func TestChaosPostgresDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now: connections are refused
	dbURL := fmt.Sprintf("postgres://hodei@127.0.0.1:%d/hodei?sslmode=disable", port)
	addr := freeAddr(t)
	logs := &syncBuffer{}
	cmd := exec.Command(hodeiBin, "server", "--listen", addr, "--max-workers", "2")
	cmd.Env = append(os.Environ(), "HODEI_DATABASE_URL="+dbURL)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	select {
	case <-done:
		t.Fatalf("server exited (%v) with PostgreSQL down, want it to wait for its database:\n%s", cmd.ProcessState, logs.String())
	case <-time.After(3 * time.Second):
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("server log after 3 s with PostgreSQL down does not say the connection is refused:\n%s", logs.String())
	}
	pg := startCluster(t, port)
	up := time.Now()
	eventually(t, 30*time.Second, "server serving once PostgreSQL is up", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	tok := dbToken(t, pg.URL("hodei"))
	serveToken(addr, func() string { return tok })
	l := newLedger(t, "postgres_down_at_start")
	id := l.submit(t, jobClient(addr), 0, l.spec(0, 3))
	started := l.waitStarted(t, id, 30*time.Second)
	st, err := store.Open(context.Background(), store.Config{URL: pg.URL("hodei")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l.check(t, st, 30*time.Second, 0, started.Sub(up))
}
