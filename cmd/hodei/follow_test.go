package main

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/cli"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// cliProc is a CLI command run in this process (cli.Main, as the hodei
// binary runs it) against one server; its output can be read while it
// runs.
type cliProc struct {
	stdout, stderr syncBuffer
	cancel         context.CancelFunc
	done           chan struct{}
	code           int
}

// startCLI runs `hodei args...` against the server at addr until it ends
// or the test does.
func startCLI(t *testing.T, addr string, args ...string) *cliProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &cliProc{cancel: cancel, done: make(chan struct{})}
	env := cliEnv(addr)
	getenv := func(k string) string {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v
			}
		}
		return os.Getenv(k)
	}
	go func() {
		defer close(p.done)
		p.code = cli.Main(ctx, args, cli.IO{In: strings.NewReader(""), Out: &p.stdout, Err: &p.stderr, Env: getenv})
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
		if t.Failed() {
			t.Logf("hodei %s: exit %d; stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.code, p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// wait waits for the command to end and returns its exit code.
func (p *cliProc) wait(t *testing.T, timeout time.Duration, what string) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		t.Fatalf("%s: still running after %s; stdout:\n%s\nstderr:\n%s", what, timeout, p.stdout.String(), p.stderr.String())
		return 0
	}
}

// TestFollowingCommandsOutliveAServerRestart: `job watch`, `job logs -f`
// and `events tail` follow a job while its only server is killed and a
// new one starts on the same address, which then stops (SIGINT) for a
// third. Each says that it reconnects (the watch, back on the current
// state, that it reconnected), none prints anything twice or misses the
// job's end, and the watch and the log follow end when the job does.
func TestFollowingCommandsOutliveAServerRestart(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	addr := freeAddr(t)
	p := startServerOn(t, dbURL, addr, "--max-workers", "0")
	submit := func() string {
		t.Helper()
		r := p.hodei(t, "job", "submit", "--label", "pool=none", "--", "true")
		if r.code != 0 {
			t.Fatalf("job submit: %+v", r)
		}
		return strings.TrimSpace(r.stdout)
	}
	// The tail starts from now: jobs are submitted until one shows, so
	// that the job followed below is created after it subscribed.
	tail := startCLI(t, addr, "events", "tail", "--aggregate", "job", "--type", "JobCreated", "--type", "JobCancelled", "-o", "json")
	var probes []string
	var probed time.Time
	eventually(t, 20*time.Second, "events tail subscribed", func() bool {
		out := tail.stdout.String()
		if slices.ContainsFunc(probes, func(p string) bool { return strings.Contains(out, p) }) {
			return true
		}
		if time.Since(probed) > time.Second {
			probes, probed = append(probes, submit()), time.Now()
		}
		return false
	})
	id := submit()
	watch := startCLI(t, addr, "job", "watch", id, "-o", "yaml")
	logs := startCLI(t, addr, "job", "logs", id, "-f")
	eventually(t, 20*time.Second, "watch and tail print the queued job", func() bool {
		return strings.Contains(watch.stdout.String(), "state: JOB_STATE_QUEUED") && strings.Contains(tail.stdout.String(), id)
	})

	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "killed server gone", func() bool { return processGone(p.cmd.Process.Pid) })
	for name, c := range map[string]*cliProc{"watch": watch, "logs": logs, "events": tail} {
		eventually(t, 20*time.Second, name+" says it reconnects", func() bool {
			return strings.Contains(c.stderr.String(), "hodei: "+name+": ") && strings.Contains(c.stderr.String(), "; reconnecting\n")
		})
	}
	p2 := startServerOn(t, dbURL, addr, "--max-workers", "0")
	eventually(t, 20*time.Second, "watch reconnected", func() bool {
		return strings.Contains(watch.stderr.String(), "hodei: watch: reconnected\n")
	})
	// Then a server that stops as it should, ending its streams.
	if err := p2.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "stopped server gone", func() bool { return processGone(p2.cmd.Process.Pid) })
	startServerOn(t, dbURL, addr, "--max-workers", "0")
	if r := p.hodei(t, "job", "cancel", id); r.code != 0 {
		t.Fatalf("job cancel: %+v", r)
	}

	if code := watch.wait(t, 30*time.Second, "job watch"); code != 0 {
		t.Errorf("job watch: exit %d, want 0; stderr:\n%s", code, watch.stderr.String())
	}
	if n, m := strings.Count(watch.stdout.String(), "state: JOB_STATE_QUEUED"), strings.Count(watch.stdout.String(), "state: JOB_STATE_CANCELLED"); n != 1 || m != 1 {
		t.Errorf("job watch printed QUEUED %d times and CANCELLED %d times, want once each:\n%s", n, m, watch.stdout.String())
	}
	if code := logs.wait(t, 30*time.Second, "job logs -f"); code != 0 || logs.stdout.String() != "" {
		t.Errorf("job logs -f of a job cancelled before it ran: exit %d, stdout %q; want 0 and no output; stderr:\n%s", code, logs.stdout.String(), logs.stderr.String())
	}

	var types []string
	eventually(t, 30*time.Second, "events tail prints JobCancelled", func() bool {
		types = types[:0]
		for _, line := range strings.Split(strings.TrimSpace(tail.stdout.String()), "\n") {
			var e struct{ Type, AggregateID string }
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("events tail line %q: %v", line, err)
			}
			if e.AggregateID == id {
				types = append(types, e.Type)
			}
		}
		return slices.Contains(types, "JobCancelled")
	})
	if strings.Join(types, " ") != "JobCreated JobCancelled" {
		t.Errorf("events tail printed %v for the job, want JobCreated then JobCancelled, once each", types)
	}
	tail.cancel()
	if code := tail.wait(t, 10*time.Second, "events tail"); code != cli.ExitCancelled {
		t.Errorf("events tail interrupted: exit %d, want %d", code, cli.ExitCancelled)
	}
}

// TestRunFollowsTheJobOfAnIdempotencyKey: a second `hodei run` with the
// same idempotency key starts no job: it says which job it follows, and
// prints that job's output and ends with its exit code.
func TestRunFollowsTheJobOfAnIdempotencyKey(t *testing.T) {
	t.Parallel()
	p := startServerOn(t, storetest.URL(t), freeAddr(t), "--max-workers", "1")
	args := []string{"run", "--idempotency-key", "deploy-42", "--", "sh", "-c", "echo ran; exit 4"}
	if r := p.hodei(t, args...); r.code != 4 || r.stdout != "ran\n" || r.stderr != "" {
		t.Fatalf("first run: %+v, want the job's output and exit 4", r)
	}
	r := p.hodei(t, args...)
	var list struct{ Jobs []struct{ ID string } }
	if err := json.Unmarshal([]byte(p.hodei(t, "job", "list", "-o", "json").stdout), &list); err != nil {
		t.Fatal(err)
	}
	if r.code != 4 || r.stdout != "ran\n" || !strings.HasPrefix(r.stderr, "hodei: the idempotency key matches job ") || !strings.HasSuffix(r.stderr, "; following it\n") {
		t.Errorf("second run: %+v, want the first job's output and exit code, and which job it follows", r)
	}
	if len(list.Jobs) != 1 || !strings.Contains(r.stderr, list.Jobs[0].ID) {
		t.Errorf("jobs after two runs with one idempotency key: %+v, want the one the second run named", list.Jobs)
	}
}
