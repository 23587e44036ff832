package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestBinaryCommandLine: the binary without a command, or with one it
// does not know, prints its usage to stderr and exits 2; bench names the
// benchmarks it has.
func TestBinaryCommandLine(t *testing.T) {
	t.Parallel()
	if r := hodeiWith(t, nil); r.code != 2 || r.stdout != "" || !strings.HasPrefix(r.stderr, "hodei: a job execution platform\n") {
		t.Errorf("hodei: %+v, want exit 2 and the usage on stderr", r)
	}
	r := hodeiWith(t, nil, "serve")
	if r.code != 2 || !strings.HasPrefix(r.stderr, "hodei: unknown command \"serve\"\n\nhodei: a job execution platform\n") {
		t.Errorf("hodei serve: %+v, want exit 2 naming the command, then the usage", r)
	}
	if r := hodeiWith(t, nil, "bench"); r.code != 1 || r.stderr != "hodei: usage: hodei bench startup|events|dispatch|throughput|logs|provision [flags]\n" {
		t.Errorf("hodei bench: %+v, want exit 1 and the benchmarks listed", r)
	}
	if r := hodeiWith(t, nil, "bench", "speed"); r.code != 1 || !strings.HasPrefix(r.stderr, "hodei: unknown benchmark \"speed\"; usage: hodei bench ") {
		t.Errorf("hodei bench speed: %+v, want exit 1 naming the benchmark", r)
	}
	// The load generator of bench logs: numbered lines padded to --size.
	if r := hodeiWith(t, nil, "bench", "emit", "--lines", "3", "--size", "10"); r.code != 0 || r.stdout != "line 1xxx\nline 2xxx\nline 3xxx\n" {
		t.Errorf("hodei bench emit: %+v, want three lines of 10 bytes", r)
	}
}

// TestExecShimFailureShowsNoSecret: the exec shim that an agent starts
// for a job with secrets exits 127 when it cannot run the job's command,
// and its error names the command but never a value it was given.
func TestExecShimFailureShowsNoSecret(t *testing.T) {
	t.Parallel()
	const value = "hunter2-secret"
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{`{"env":["SECRET_DB=` + value + `"]}`, []string{"/nonexistent/cmd", "cmd"}, "hodei exec-shim: exec /nonexistent/cmd: no such file or directory\n"},
		{`{"env":["SECRET_DB=` + value + `"`, []string{"/bin/true", "true"}, "hodei exec-shim: the secrets on stdin are not valid JSON\n"},
		{`{"env":[]}`, []string{"/bin/true"}, "hodei exec-shim: want PATH ARGV0 [ARGS...]\n"},
	} {
		cmd := exec.Command(hodeiBin, append([]string{"exec-shim"}, tc.args...)...)
		cmd.Stdin = strings.NewReader(tc.stdin)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 127 || string(out) != tc.want {
			t.Errorf("hodei exec-shim %v: %v, output %q; want exit 127 and %q", tc.args, err, out, tc.want)
		}
		if strings.Contains(string(out), value) {
			t.Errorf("hodei exec-shim %v shows the secret: %q", tc.args, out)
		}
	}
}

// TestAgentRefusesABadCommandLine: an agent whose trust bundle, OTLP
// endpoint, metrics address or bootstrap token is unusable exits 2 at
// once, naming it.
func TestAgentRefusesABadCommandLine(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "ca.pem")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	token := "HODEI_BOOTSTRAP_TOKEN=t"
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{token}, []string{"--ca-file", missing}, "hodei: --ca-file: open " + missing + ": no such file or directory\n"},
		{[]string{token, "HODEI_CA_FILE=" + missing}, nil, "hodei: --ca-file: open " + missing + ": no such file or directory\n"},
		{[]string{token}, []string{"--otlp-endpoint", "ftp://collector"}, `hodei agent: --otlp-endpoint: otlp endpoint "ftp://collector": must be an http:// or https:// URL with a host` + "\n"},
		{nil, nil, "hodei: agent: bootstrap token is required\n"},
		{[]string{token}, []string{"--metrics-listen", taken.Addr().String()}, "hodei agent: --metrics-listen: listen tcp " + taken.Addr().String() + ": bind: address already in use\n"},
	} {
		args := append([]string{"agent", "--server", freeAddr(t)}, tc.args...)
		r := hodeiWith(t, append(tc.env, "HODEI_LOG_FORMAT=json"), args...)
		if r.code != 2 || !strings.HasSuffix(r.stderr, tc.want) {
			t.Errorf("%v hodei %s: %+v, want exit 2 and %q", tc.env, strings.Join(args, " "), r, tc.want)
		}
	}
}

// TestTestDBServesUntilInterrupted: `hodei testdb --url-file F` writes
// the URL of a running PostgreSQL to F once it takes connections, and
// stops it on Ctrl-C.
func TestTestDBServesUntilInterrupted(t *testing.T) {
	t.Parallel()
	urlFile := filepath.Join(t.TempDir(), "url")
	cmd := exec.Command(hodeiBin, "testdb", "--url-file", urlFile)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("hodei testdb:\n%s", logs.String())
		}
	})
	var url []byte
	eventually(t, 60*time.Second, "URL file written", func() bool {
		select {
		case err := <-done:
			t.Fatalf("hodei testdb exited: %v", err)
		default:
		}
		url, _ = os.ReadFile(urlFile)
		return len(url) > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, string(url))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Errorf("SELECT 1: %d, %v", one, err)
	}
	conn.Close(ctx)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("hodei testdb after Ctrl-C: %v, want exit 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("hodei testdb still running 30s after Ctrl-C")
	}
	if c, err := pgx.Connect(ctx, string(url)); err == nil {
		c.Close(ctx)
		t.Errorf("%s still takes connections after hodei testdb ended", url)
	}
}

// TestDevRefusesABadSetup: `hodei dev` without a place for the client
// configuration, with a configuration file others may read, with a data
// dir that is a file or holding a CA key that is not one, exits 1 at
// start naming what is wrong, and leaves the configuration file as it
// was.
func TestDevRefusesABadSetup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbURL := storetest.URL(t)
	readable := filepath.Join(dir, "readable.json")
	if err := os.WriteFile(readable, []byte(`{"server": "elsewhere:1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	dataFile := filepath.Join(dir, "data")
	if err := os.WriteFile(dataFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	badKeyDir := filepath.Join(dir, "keys")
	if err := os.Mkdir(badKeyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(badKeyDir, "hodei-ca.key"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.json")
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"HODEI_DATABASE_URL=" + dbURL, "HODEI_CONFIG=", "HOME="}, nil, "hodei: client configuration: set HODEI_CONFIG or HOME\n"},
		{[]string{"HODEI_DATABASE_URL=" + dbURL, "HODEI_CONFIG=" + readable}, nil, "hodei: client configuration " + readable + ": mode 0644 lets other users read or change it"},
		{[]string{"HODEI_CONFIG=" + config}, []string{"--data-dir", dataFile}, "hodei: embedded postgres: data dir " + dataFile + " is not a directory\n"},
		{[]string{"HODEI_DATABASE_URL=" + dbURL, "HODEI_CONFIG=" + config}, []string{"--data-dir", badKeyDir}, "hodei: CA key: "},
	} {
		env := append(append(noTestCA(config), "HODEI_DATABASE_URL="), tc.env...)
		r := hodeiWith(t, env, append([]string{"dev", "--listen", freeAddr(t), "--max-workers", "0"}, tc.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v hodei dev %v: exit %d, stderr:\n%s\nwant exit 1 and %q", tc.env, tc.args, r.code, r.stderr, tc.want)
		}
	}
	if b, _ := os.ReadFile(readable); string(b) != `{"server": "elsewhere:1"}` {
		t.Errorf("%s after the refused start: %q, want it unchanged", readable, b)
	}
	if _, err := os.Stat(config); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s written by a dev that did not start: %v", config, err)
	}
}
