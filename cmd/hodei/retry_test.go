package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestKilledWorkerIsRetriedByDefault: a job that sets no retry policy
// loses its worker to kill -9; it is retried on another worker and
// succeeds there. While the retry runs, the job shows no failure of its
// own: the lost worker stays on the first attempt.
func TestKilledWorkerIsRetriedByDefault(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	addr := freeAddr(t)
	p := startServerOn(t, dbURL, addr, "--max-workers", "0", "--lease", "1s")
	st := openStore(t, dbURL)
	first := spawnAgent(t, st, []string{addr})
	c := jobClient(addr)

	dir := t.TempDir()
	marker, pidFile, retried, release := filepath.Join(dir, "marker"), filepath.Join(dir, "pid"), filepath.Join(dir, "retried"), filepath.Join(dir, "release")
	script := fmt.Sprintf(`if [ -e %[1]s ]; then touch %[3]s; while [ ! -e %[4]s ]; do sleep 0.05; done; exit 0; fi
touch %[1]s; echo $$ > %[2]s; exec sleep 600`, marker, pidFile, retried, release)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", script}})
	jobPID, _ := strconv.Atoi(waitFile(t, pidFile))
	t.Cleanup(func() { syscall.Kill(-jobPID, syscall.SIGKILL) }) // the process group the killed agent left
	if err := syscall.Kill(first.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	spawnAgent(t, st, []string{addr})
	eventually(t, 30*time.Second, "the retry running", func() bool { _, err := os.Stat(retried); return err == nil })
	// The process runs; its start report may still be on its way.
	pollJob(t, c, id, 10*time.Second, "running", isRunning)

	r := p.hodei(t, "job", "get", id, "-o", "json")
	if r.code != 0 {
		t.Fatalf("hodei job get: %+v", r)
	}
	var running struct {
		State, FailureClass, Message string
		MaxAttempts                  int
		Attempts                     []struct{ FailureClass string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &running); err != nil {
		t.Fatalf("job get -o json: %v\n%s", err, r.stdout)
	}
	if running.State != "JOB_STATE_RUNNING" || running.FailureClass != "" || running.Message != "" {
		t.Errorf("running retry: state %s, failure %q %q; want running, no failure of the job's own", running.State, running.FailureClass, running.Message)
	}
	if len(running.Attempts) != 2 || running.Attempts[0].FailureClass != "FAILURE_CLASS_WORKER_LOST" || running.Attempts[1].FailureClass != "" {
		t.Errorf("attempts %+v, want the first lost, the second running", running.Attempts)
	}
	if running.MaxAttempts != 3 {
		t.Errorf("max attempts %d, want the default 3", running.MaxAttempts)
	}
	if table := p.hodei(t, "job", "get", id).stdout; strings.Contains(strings.SplitN(table, "Attempts:", 2)[0], "worker_lost") {
		t.Errorf("hodei job get shows the previous attempt's failure as the job's:\n%s", table)
	}

	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	j := pollJob(t, c, id, 30*time.Second, "final", isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 2 || j.FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_UNSPECIFIED {
		t.Fatalf("job: state %v, %d attempts, failure %v; want SUCCEEDED on its second attempt", j.State, len(j.Attempts), j.FailureClass)
	}
	if a := j.Attempts[0]; a.FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST || a.WorkerId != first.id {
		t.Errorf("attempt 1: %v on %s, want worker_lost on the killed worker %s", a.FailureClass, a.WorkerId, first.id)
	}
}

// TestJobTypeDefaults: types loaded from the server's file at start and
// set through the CLI give their retry policy to jobs that set none; a
// spec's own values win; bad input is refused naming the field and
// changes nothing.
func TestJobTypeDefaults(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "types.yaml")
	if err := os.WriteFile(file, []byte("flaky:\n  max_attempts: 3\n  retryable_exit_codes: [75]\n  initial_backoff: 10ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServerOn(t, storetest.URL(t), freeAddr(t), "--max-workers", "1", "--job-type-defaults", file)

	r := p.hodei(t, "jobtype", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "flaky") || !strings.Contains(r.stdout, "10ms..32s") {
		t.Fatalf("hodei jobtype list: %+v, want the type of the file", r)
	}
	if r := p.hodei(t, "jobtype", "set", "build", "--max-attempts", "2", "--retry-exit-code", "3", "--retry-exit-code", "4",
		"--backoff-initial", "10ms", "--backoff-max", "20ms"); r.code != 0 {
		t.Fatalf("hodei jobtype set: %+v", r)
	}
	for _, bad := range []struct {
		args  []string
		field string
	}{
		{[]string{"--max-attempts", "500"}, "retry.max_attempts"},
		{[]string{"--retry-exit-code", "300"}, "retry.retryable_exit_codes"},
		{[]string{"--backoff-initial", "2s", "--backoff-max", "1s"}, "retry.max_backoff"},
	} {
		r := p.hodei(t, append([]string{"jobtype", "set", "build"}, bad.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, bad.field) {
			t.Errorf("hodei jobtype set build %v: %+v, want refused naming %s", bad.args, r, bad.field)
		}
	}
	if r := p.hodei(t, "jobtype", "set", "bad name"); r.code == 0 || !strings.Contains(r.stderr, "name") {
		t.Errorf("hodei jobtype set 'bad name': %+v, want refused", r)
	}
	r = p.hodei(t, "jobtype", "get", "build", "-o", "json")
	var got struct {
		JobType struct {
			Retry struct {
				MaxAttempts        int
				RetryableExitCodes []int
				InitialBackoff     string
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.JobType.Retry.MaxAttempts != 2 ||
		fmt.Sprint(got.JobType.Retry.RetryableExitCodes) != "[3 4]" || got.JobType.Retry.InitialBackoff != "0.010s" {
		t.Errorf("hodei jobtype get build after refused sets: %+v (%v)\n%s", got, err, r.stdout)
	}

	attempts := func(args ...string) (code, n int) {
		t.Helper()
		r := p.hodei(t, append([]string{"job", "submit"}, args...)...)
		if r.code != 0 {
			t.Fatalf("hodei job submit %v: %+v", args, r)
		}
		id := strings.TrimSpace(r.stdout)
		j := waitJob(t, jobClient(p.addr), id, 30*time.Second, isFinal)
		return int(j.ExitCode), len(j.Attempts)
	}
	for _, c := range []struct {
		name          string
		args          []string
		code, retries int
	}{
		{"the file's type", []string{"--type", "flaky", "--", "sh", "-c", "exit 75"}, 75, 3},
		{"the CLI's type", []string{"--type", "build", "--", "sh", "-c", "exit 4"}, 4, 2},
		{"the spec's max_attempts wins", []string{"--type", "flaky", "--max-attempts", "2", "--", "sh", "-c", "exit 75"}, 75, 2},
		{"the spec's exit codes win", []string{"--type", "flaky", "--retry-exit-code", "9", "--", "sh", "-c", "exit 75"}, 75, 1},
		{"no type: the job's own failure is not retried", []string{"--", "sh", "-c", "exit 75"}, 75, 1},
	} {
		if code, n := attempts(c.args...); code != c.code || n != c.retries {
			t.Errorf("%s: exit %d after %d attempts, want %d after %d", c.name, code, n, c.code, c.retries)
		}
	}
	if r := p.hodei(t, "jobtype", "delete", "build"); r.code != 0 {
		t.Fatalf("hodei jobtype delete: %+v", r)
	}
	if r := p.hodei(t, "jobtype", "get", "build"); r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), "not found") {
		t.Errorf("hodei jobtype get of a deleted type: %+v", r)
	}
}
