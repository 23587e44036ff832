package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-dev/hodei/internal/store/storetest"
	"github.com/hodei-dev/hodei/internal/testbin"
)

// These tests run the real binary: `hodei server` on a fresh database,
// agents as subprocesses, and the CLI and grpcurl as a user would.

var hodeiBin string

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m, &hodeiBin, func(m *testing.M) int {
		defer stopKube() // the Kubernetes tests' cluster, if one started
		return storetest.Main(m)
	}))
}

// serverProc is a `hodei server` subprocess on its database.
type serverProc struct {
	addr  string
	dbURL string
	cmd   *exec.Cmd
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServer runs `hodei server` on a fresh database until the test ends.
func startServer(t *testing.T) serverProc {
	t.Helper()
	return startServerOn(t, storetest.URL(t), freeAddr(t))
}

// startServerOn runs `hodei server` on dbURL, listening on addr.
func startServerOn(t *testing.T, dbURL, addr string, args ...string) serverProc {
	t.Helper()
	sp := spawnPlatform(t, []string{"HODEI_DATABASE_URL=" + dbURL}, append([]string{"server", "--listen", addr}, args...)...)
	eventually(t, 20*time.Second, "server listening on "+addr, func() bool {
		select {
		case <-sp.done:
			t.Fatalf("server exited:\n%s", sp.logs.String())
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return serverProc{addr: addr, dbURL: dbURL, cmd: sp.cmd}
}

type result struct {
	stdout, stderr string
	code           int
}

func (p serverProc) hodei(t *testing.T, args ...string) result {
	t.Helper()
	return p.hodeiIn(t, "", args...)
}

// runHodei runs the hodei CLI with env as its whole environment.
func runHodei(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, hodeiBin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("hodei %v: %v", args, err)
	}
	return r
}

func TestRunStreamsOutputAndExitCode(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	for _, tc := range []struct {
		args           []string
		stdout, stderr string
		code           int
	}{
		{[]string{"run", "--", "sh", "-c", "echo hello; echo oops >&2; exit 3"}, "hello\n", "oops\n", 3},
		{[]string{"run", "--", "false"}, "", "", 1},
		{[]string{"run", "--", "true"}, "", "", 0},
	} {
		r := p.hodei(t, tc.args...)
		if r.stdout != tc.stdout || r.stderr != tc.stderr || r.code != tc.code {
			t.Errorf("hodei %q: stdout=%q stderr=%q code=%d, want %q %q %d", tc.args, r.stdout, r.stderr, r.code, tc.stdout, tc.stderr, tc.code)
		}
	}
}

func TestEmptyCommandIsRejectedAndWritesNothing(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	r := p.hodei(t, "job", "submit", "-f", writeFile(t, `{"name": "empty"}`))
	if r.code == 0 || !strings.Contains(r.stderr, "command") {
		t.Fatalf("submit without command: code=%d stderr=%q, want a failure naming the command field", r.code, r.stderr)
	}
	conn, err := pgx.Connect(context.Background(), p.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var jobs, events int
	if err := conn.QueryRow(context.Background(), "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM events WHERE aggregate_kind <> 'token')").Scan(&jobs, &events); err != nil {
		t.Fatal(err)
	}
	if jobs != 0 || events != 0 {
		t.Fatalf("jobs=%d events=%d after a rejected submit, want 0 and 0", jobs, events)
	}
}

func TestGrpcurlListsServicesAndGetsAJob(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	r := p.hodei(t, "job", "submit", "--", "true")
	if r.code != 0 {
		t.Fatalf("submit: %+v", r)
	}
	id := strings.TrimSpace(r.stdout)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	grpcurl := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", append([]string{"tool", "-modfile=" + filepath.Join(root, "tools/go.mod"), "grpcurl", "-plaintext", "-H", "authorization: Bearer " + tokenFor(p.addr)}, args...)...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	list := grpcurl(p.addr, "list")
	for _, svc := range []string{"hodei.v1.JobService", "hodei.v1.WorkerService", "hodei.v1.EventService", "hodei.v1.ProviderService", "hodei.v1.WebhookService"} {
		if !strings.Contains(list, svc) {
			t.Errorf("grpcurl list lacks %s:\n%s", svc, list)
		}
	}
	out := grpcurl("-d", fmt.Sprintf(`{"id": %q}`, id), p.addr, "hodei.v1.JobService/GetJob")
	var resp struct {
		Job struct {
			ID string `json:"id"`
		} `json:"job"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Job.ID != id {
		t.Fatalf("GetJob via grpcurl: %v\n%s", err, out)
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// syncBuffer is a bytes.Buffer safe for a process's two output streams.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFollowLogsOnAnotherReplica: the job runs on a worker of server A;
// `hodei run` talks to server B, which has no workers. B's follower is
// woken by A's NOTIFY and streams the output live to the end; a job that
// ends well after its last output ends the follow through its final
// event.
func TestFollowLogsOnAnotherReplica(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	startServerOn(t, dbURL, freeAddr(t), "--max-workers", "1")
	b := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0")
	r := b.hodei(t, "run", "--", "sh", "-c", "echo a; sleep 0.3; echo b >&2; sleep 0.3; echo c")
	if r.stdout != "a\nc\n" || r.stderr != "b\n" || r.code != 0 {
		t.Fatalf("via the other replica: stdout=%q stderr=%q code=%d", r.stdout, r.stderr, r.code)
	}
	start := time.Now()
	r = b.hodei(t, "run", "--", "sh", "-c", "echo a; sleep 1; exit 3")
	if r.stdout != "a\n" || r.code != 3 || time.Since(start) > 30*time.Second {
		t.Fatalf("a job silent at its end, via the other replica: stdout=%q stderr=%q code=%d after %v", r.stdout, r.stderr, r.code, time.Since(start))
	}
}

// TestRunCtrlCCancelsTheJob: Ctrl-C on `hodei run` cancels the job it
// submitted and exits 130.
func TestRunCtrlCCancelsTheJob(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	cmd := exec.Command(hodeiBin, "run", "--", "sleep", "30")
	cmd.Env = append(os.Environ(), cliEnv(p.addr)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), p.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	state := func() string {
		var s string
		_ = conn.QueryRow(context.Background(), "SELECT state FROM jobs LIMIT 1").Scan(&s)
		return s
	}
	eventually(t, 30*time.Second, "job running", func() bool { return state() == "running" })
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("hodei run after Ctrl-C: %v, want exit 130", err)
	}
	eventually(t, 10*time.Second, "job cancelled", func() bool { return state() == "cancelled" })
}
