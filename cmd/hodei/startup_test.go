package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// Starting the platform: restarts on the same data dir, taken addresses
// and a database that is not there yet.

// platformProc is a `hodei dev` or `hodei server` subprocess.
type platformProc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{} // closed once it has exited and been reaped
}

// spawnPlatform runs hodei with args and env on top of the environment
// (without HODEI_DATABASE_URL) until the test ends.
func spawnPlatform(t *testing.T, env []string, args ...string) *platformProc {
	t.Helper()
	env = registerPlatform(t, env, args)
	p := &platformProc{cmd: exec.Command(hodeiBin, args...), logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "HODEI_DATABASE_URL=") }), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("hodei %s log:\n%s", strings.Join(args, " "), p.logs.String())
		}
	})
	return p
}

// waitLog waits until the process logs what, failing if it exits first.
func (p *platformProc) waitLog(t *testing.T, timeout time.Duration, what string) {
	t.Helper()
	eventually(t, timeout, "log line "+strconv.Quote(what), func() bool {
		select {
		case <-p.done:
			t.Fatalf("exited before logging %q:\n%s", what, p.logs.String())
		default:
		}
		return strings.Contains(p.logs.String(), what)
	})
}

// searchableDir is a temp dir the postgres OS user can traverse (when the
// tests run as root, postgres does not).
func searchableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hodei-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

var embeddedURL = regexp.MustCompile(`embedded postgres ready" url="?([^"\s]+)`)

// TestDevRestartsAtOnceAfterKill9: `hodei dev --data-dir D` runs a job and
// is killed with SIGKILL; a new `hodei dev` on the same data dir and
// address, started at once, comes up (the embedded PostgreSQL left by the
// first is stopped, not in the way) with the job, its events and its
// output.
func TestDevRestartsAtOnceAfterKill9(t *testing.T) {
	t.Parallel()
	data := filepath.Join(searchableDir(t), "pg")
	addr := freeAddr(t)
	args := []string{"dev", "--listen", addr, "--data-dir", data, "--max-workers", "1"}
	first := spawnPlatform(t, nil, args...)
	first.waitLog(t, 60*time.Second, "Hodei is running on "+addr)
	c := jobClient(addr)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", "echo kept"}})
	if j := pollJob(t, c, id, 30*time.Second, "final", isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s before the kill, want SUCCEEDED", j.State)
	}
	m := embeddedURL.FindStringSubmatch(first.logs.String())
	if m == nil {
		t.Fatal("no embedded postgres URL in the log")
	}
	st := openStore(t, m[1])
	events := eventTypes(t, st, id)
	st.Close()

	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.done
	killed := time.Now()
	second := spawnPlatform(t, nil, args...)
	second.waitLog(t, 60*time.Second, "Hodei is running on "+addr)
	t.Logf("up again %v after the kill", time.Since(killed).Round(time.Millisecond))

	j := getJob(c, id)
	if j == nil || j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 1 {
		t.Fatalf("job after the restart: %v, want SUCCEEDED with its one attempt", j)
	}
	m = embeddedURL.FindStringSubmatch(second.logs.String())
	if m == nil {
		t.Fatal("no embedded postgres URL in the log of the second dev")
	}
	if diff := cmp.Diff(events, eventTypes(t, openStore(t, m[1]), id)); diff != "" {
		t.Errorf("events of the job across the restart (-before +after):\n%s", diff)
	}
	if out, _ := jobLogs(t, c, id); string(out) != "kept\n" {
		t.Errorf("job output after the restart: %q, want %q", out, "kept\n")
	}
}

// TestTakenAddressFailsAtOnce: `hodei server` and `hodei dev` on an
// address something else listens on exit 1 at once with an error naming
// the address; dev does so before starting its PostgreSQL.
func TestTakenAddressFailsAtOnce(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	dbURL := storetest.URL(t)
	for _, tc := range []struct {
		args []string
		env  []string
	}{
		{[]string{"server", "--listen", addr}, []string{"HODEI_DATABASE_URL=" + dbURL}},
		{[]string{"dev", "--listen", addr}, nil},
	} {
		p := spawnPlatform(t, tc.env, tc.args...)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("hodei %s: still running 10s on a taken address", tc.args[0])
		}
		want := "hodei: listen on " + addr + ": address already in use (is another server running there? --listen picks another address)\n"
		if code := p.cmd.ProcessState.ExitCode(); code != 1 || p.logs.String() != want {
			t.Errorf("hodei %s: exit %d, output:\n%s\nwant exit 1 and only:\n%s", tc.args[0], code, p.logs.String(), want)
		}
	}
}

// TestMakeRunRefusesATakenAddress: `make run`'s script, with a server
// already on its address, fails naming the address and runs no job there.
func TestMakeRunRefusesATakenAddress(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	cmd := exec.Command("../../scripts/run-demo.sh")
	cmd.Env = append(os.Environ(), "HODEI_DEMO_ADDR="+p.addr, "HODEI_BIN="+hodeiBin)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("run-demo.sh succeeded with %s taken:\n%s", p.addr, out)
	}
	if want := "make run: " + p.addr + " is taken"; !strings.Contains(string(out), want) {
		t.Errorf("run-demo.sh output does not say %q:\n%s", want, out)
	}
	if n := queryOne[int64](t, openStore(t, p.dbURL), "SELECT count(*) FROM jobs"); n != 0 {
		t.Errorf("%d jobs on the server that held the address, want none", n)
	}
}

// TestServerWaitsForTheDatabase: `hodei server` on a database that is
// down keeps retrying, logging each failed attempt once with the reason,
// answers /healthz and reports not ready on /readyz; once the database
// is up it becomes ready and runs a job.
func TestServerWaitsForTheDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := pgembed.Config{DataDir: filepath.Join(searchableDir(t), "pg"), Settings: pgembed.ThrowawaySettings()}
	db, err := pgembed.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateDatabase(ctx, "hodei"); err != nil {
		t.Fatal(err)
	}
	dbURL, port := db.URL("hodei"), db.Port()
	if err := db.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	addr := freeAddr(t)
	p := spawnPlatform(t, []string{"HODEI_DATABASE_URL=" + dbURL}, "server", "--listen", addr, "--max-workers", "1")
	p.waitLog(t, 10*time.Second, "attempt=3")
	if code, body := httpGet(t, addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while waiting: %d %q, want 200", code, body)
	}
	if code, body := httpGet(t, addr, "/readyz"); code != http.StatusServiceUnavailable ||
		!strings.Contains(body, "waiting for the database") || !strings.Contains(body, "connection refused") {
		t.Errorf("/readyz while waiting: %d %q, want 503 with the reason", code, body)
	}

	cfg.Port = port
	if db, err = pgembed.Start(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Stop(context.Background()) })
	eventually(t, 20*time.Second, "/readyz ok", func() bool {
		code, _ := httpGet(t, addr, "/readyz")
		return code == http.StatusOK
	})
	r := serverProc{addr: addr}.hodei(t, "run", "--", "echo", "served")
	if r.code != 0 || r.stdout != "served\n" {
		t.Errorf("hodei run once the database is up: %+v", r)
	}

	var attempts []string
	for _, m := range regexp.MustCompile(`database not reachable, retrying" attempt=(\d+) .*connection refused`).FindAllStringSubmatch(p.logs.String(), -1) {
		attempts = append(attempts, m[1])
	}
	if len(attempts) < 3 || !strings.Contains(p.logs.String(), `msg="database reachable" attempts=`+strconv.Itoa(len(attempts)+1)) {
		t.Errorf("failed attempts logged %v; want each once with its reason, then the success", attempts)
	}
	for i, a := range attempts {
		if a != strconv.Itoa(i+1) {
			t.Errorf("failed attempts logged %v, want 1..%d once each", attempts, len(attempts))
			break
		}
	}
}

// httpGet returns the status and body of GET http://addr+path.
func httpGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
