package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// hodeiIn runs the CLI against p with stdin.
func (p serverProc) hodeiIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, hodeiBin, args...)
	cmd.Env = append(os.Environ(), cliEnv(p.addr)...)
	cmd.Stdin = strings.NewReader(stdin)
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

// startSecretServer runs `hodei server` with a key file of its own.
func startSecretServer(t *testing.T) (serverProc, string) {
	t.Helper()
	key := filepath.Join(t.TempDir(), "secret.key")
	keyData := "k1 " + strings.Repeat("ab", 32) + "\n"
	if err := os.WriteFile(key, []byte(keyData), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServerOn(t, storetest.URL(t), freeAddr(t), "--secret-key-file", key, "--max-workers", "2"), key
}

// TestSecretDeliveredToTheJobOnlyThroughItsEnvironment covers the
// story's delivery: the value set from stdin reaches the job as
// SECRET_DB_PASS or a variable of the user's choice (the exec shim read
// it as JSON from its stdin, and the job's stdin is empty), its output is
// masked, the audit trail has the set and the dispatch, and a rotated key
// still opens the value.
func TestSecretDeliveredToTheJobOnlyThroughItsEnvironment(t *testing.T) {
	t.Parallel()
	p, keyFile := startSecretServer(t)
	const value = "s3cr3t value\twith \"quotes\""
	if r := p.hodeiIn(t, value+"\n", "secret", "set", "db-pass"); r.code != 0 || !strings.Contains(r.stdout, "version 1") {
		t.Fatalf("secret set: %+v", r)
	}
	// Never from argv; never shorter than 4 bytes.
	if r := p.hodeiIn(t, "", "secret", "set", "other", "on-the-command-line"); r.code != 2 {
		t.Fatalf("secret set with a value in argv: %+v, want a usage error", r)
	}
	if r := p.hodeiIn(t, "abc\n", "secret", "set", "short"); r.code != 2 || !strings.Contains(r.stderr, "at least 4 bytes") {
		t.Fatalf("secret set of 3 bytes: %+v", r)
	}
	if r := p.hodei(t, "secret", "list"); r.code != 0 || !strings.Contains(r.stdout, "db-pass") || strings.Contains(r.stdout, "short") || strings.Contains(r.stdout, value) {
		t.Fatalf("secret list: %+v", r)
	}
	if r := p.hodei(t, "job", "submit", "--secret", "nope", "--", "true"); r.code == 0 || !strings.Contains(r.stderr, `secrets[0].name: no secret is named "nope"`) {
		t.Fatalf("submit with an unknown secret: %+v", r)
	}

	script := `[ "$SECRET_DB_PASS" = "$PGPASSWORD" ] && echo same; printf 'stdin:%s\n' "$(cat)"; echo "$SECRET_DB_PASS"; env | grep -c 's3cr3t' >&2`
	r := p.hodei(t, "run", "--secret", "db-pass", "--secret", "PGPASSWORD=db-pass", "--", "sh", "-c", script)
	if r.code != 0 {
		t.Fatalf("run: %+v", r)
	}
	if want := "same\nstdin:\n[REDACTED:db-pass]\n"; r.stdout != want {
		t.Errorf("job output %q, want %q", r.stdout, want)
	}
	if strings.TrimSpace(r.stderr) != "2" {
		t.Errorf("job's environment holds the value %q times, want 2 (SECRET_DB_PASS, PGPASSWORD)", r.stderr)
	}

	before, _ := os.ReadFile(keyFile)
	if r := p.hodei(t, "secret", "rotate-key"); r.code != 0 || !strings.Contains(r.stdout, "1 secrets re-sealed") {
		t.Fatalf("rotate-key: %+v", r)
	}
	after, _ := os.ReadFile(keyFile)
	if bytes.Equal(before, after) || bytes.Contains(after, bytes.TrimSpace(bytes.Fields(before)[1])) {
		t.Errorf("key file after rotation still holds the old key:\n%s", after)
	}
	if r := p.hodei(t, "run", "--secret", "db-pass", "--", "sh", "-c", `[ "$SECRET_DB_PASS" = 's3cr3t value	with "quotes"' ] && echo same`); r.stdout != "same\n" {
		t.Fatalf("run after rotation: %+v", r)
	}

	audit := p.hodei(t, "secret", "audit", "db-pass")
	if audit.code != 0 {
		t.Fatalf("secret audit: %+v", audit)
	}
	for _, op := range []string{"set", "dispatch", "rotate-key"} {
		if !strings.Contains(audit.stdout, " "+op+" ") {
			t.Errorf("audit lacks %s:\n%s", op, audit.stdout)
		}
	}
	if n := strings.Count(audit.stdout, " dispatch "); n != 2 {
		t.Errorf("audit has %d dispatches, want 2 (one per attempt):\n%s", n, audit.stdout)
	}
	for _, line := range strings.Split(audit.stdout, "\n") {
		if strings.Contains(line, " dispatch ") && !strings.HasSuffix(strings.TrimSpace(line), "test-admin") {
			t.Errorf("a dispatch does not name the token that submitted the job (test-admin): %q", line)
		}
	}
	if r := p.hodei(t, "secret", "delete", "db-pass"); r.code != 0 {
		t.Fatalf("secret delete: %+v", r)
	}
	if r := p.hodei(t, "run", "--secret", "db-pass", "--", "true"); r.code == 0 {
		t.Fatalf("run with a deleted secret: %+v", r)
	}
}

// TestSecretDeliveredInADockerWorker: the exec shim is the static binary
// mounted into the worker's container; the job there gets the value and
// its output is masked.
func TestSecretDeliveredInADockerWorker(t *testing.T) {
	needDocker(t)
	t.Parallel()
	key := filepath.Join(t.TempDir(), "secret.key")
	if err := os.WriteFile(key, []byte("k1 "+strings.Repeat("cd", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dbURL := storetest.URL(t)
	installID(t, dbURL) // removes the test's containers at the end
	p := startServerOn(t, dbURL, freeAddr(t), "--secret-key-file", key, "--max-workers", "0", "--docker-max-workers", "1", "--docker-binary", hodeiBin)
	if r := p.hodeiIn(t, "in-a-container-9\n", "secret", "set", "db-pass"); r.code != 0 {
		t.Fatalf("secret set: %+v", r)
	}
	r := p.hodei(t, "run", "--secret", "db-pass", "--", "sh", "-c", `echo "$SECRET_DB_PASS"; [ "$SECRET_DB_PASS" = in-a-container-9 ] && echo same; cat /proc/1/cmdline | tr '\0' ' ' | grep -c in-a-container || true`)
	if want := "[REDACTED:db-pass]\nsame\n0\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("run in Docker: %+v, want stdout %q", r, want)
	}
}
