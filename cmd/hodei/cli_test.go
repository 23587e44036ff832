package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestCLIListsExplainsCancelsAndRetries drives a server through the CLI
// only: jobs listed by type and state, a page at a time and all pages,
// providers listed, a job no worker can take explained, cancelled and
// retried, and bad flags refused with the flag named.
func TestCLIListsExplainsCancelsAndRetries(t *testing.T) {
	t.Parallel()
	p := startServerOn(t, storetest.URL(t), freeAddr(t), "--max-workers", "1")
	c := jobClient(p.addr)
	var ids []string
	for range 3 {
		r := p.hodei(t, "job", "submit", "--type", "listed", "--", "echo", "x")
		if r.code != 0 {
			t.Fatalf("job submit: %+v", r)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	for _, id := range ids {
		pollJob(t, c, id, 30*time.Second, "final", isFinal)
	}
	list := func(args ...string) []string {
		t.Helper()
		r := p.hodei(t, append([]string{"job", "list", "-o", "json"}, args...)...)
		if r.code != 0 {
			t.Fatalf("job list %v: %+v", args, r)
		}
		var out struct {
			Jobs          []struct{ ID string }
			NextPageToken string
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("job list %v: %v\n%s", args, err, r.stdout)
		}
		var got []string
		for _, j := range out.Jobs {
			got = append(got, j.ID)
		}
		return got
	}
	if got := list("--type", "listed", "--state", "succeeded", "--all", "--limit", "2"); len(got) != 3 {
		t.Errorf("job list --all --limit 2: %d jobs, want the 3 (two pages)", len(got))
	}
	if got := list("--type", "listed", "--limit", "2"); len(got) != 2 {
		t.Errorf("job list --limit 2: %d jobs, want one page of 2", len(got))
	}
	if got := list("--type", "other"); len(got) != 0 {
		t.Errorf("job list --type other: %v, want none", got)
	}
	if r := p.hodei(t, "job", "list", "--state", "sideways"); r.code != 2 || !strings.Contains(r.stderr, "state") {
		t.Errorf("job list --state sideways: %+v, want exit 2 naming the state", r)
	}
	if r := p.hodei(t, "provider", "list"); r.code != 0 || !strings.Contains(r.stdout, "process") {
		t.Errorf("provider list: %+v, want the process provider", r)
	}

	if r := p.hodei(t, "provider", "get", "process", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"maxWorkers": 1`) {
		t.Errorf("provider get process: %+v, want its max workers, 1", r)
	}
	checkDeadLetterRPCs(t, p.addr)
	lines := tailEvents(t, p.addr)

	// A job that needs a label no worker has waits; explain names it.
	r := p.hodei(t, "job", "submit", "--label", "gpu=a100", "--cpu", "64", "--", "echo", "never")
	if r.code != 0 {
		t.Fatalf("job submit: %+v", r)
	}
	id := strings.TrimSpace(r.stdout)
	if r := p.hodei(t, "job", "explain", id); r.code != 0 || !strings.Contains(r.stdout, "gpu") {
		t.Errorf("job explain: %+v, want the missing gpu label named", r)
	}
	if r := p.hodei(t, "job", "cancel", id); r.code != 0 {
		t.Fatalf("job cancel: %+v", r)
	}
	if j := getJob(c, id); j.State != hodeiv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("after cancel: %v, want CANCELLED", j.State)
	}
	if r := p.hodei(t, "job", "retry", id); r.code != 0 {
		t.Fatalf("job retry: %+v", r)
	}
	if j := getJob(c, id); j.State != hodeiv1.JobState_JOB_STATE_QUEUED {
		t.Fatalf("after retry: %v, want QUEUED", j.State)
	}
	if r := p.hodei(t, "job", "retry", id); r.code == 0 || !strings.Contains(r.stderr, "queued") {
		t.Errorf("retry of a queued job: %+v, want a refusal naming its state", r)
	}
	if r := p.hodei(t, "job", "cancel", id); r.code != 0 {
		t.Fatalf("second cancel: %+v", r)
	}
	var seen []string
	for len(seen) < 3 && lines.Scan() {
		var e struct{ Type, AggregateID string }
		if err := json.Unmarshal(lines.Bytes(), &e); err != nil {
			t.Fatalf("events tail line %q: %v", lines.Text(), err)
		}
		if strings.Contains(lines.Text(), id) {
			seen = append(seen, e.Type)
		}
	}
	if want := []string{"JobCreated", "JobCancelled", "JobCancelled"}; !slices.Equal(seen, want) {
		t.Errorf("events tail of the job: %v, want %v", seen, want)
	}
}

// checkDeadLetterRPCs: a fresh server has no dead letters, and replaying
// one that does not exist is NotFound.
func checkDeadLetterRPCs(t *testing.T, addr string) {
	t.Helper()
	ev := hodeiv1connect.NewEventServiceClient(apiClient(addr), "https://"+addr, connect.WithGRPC())
	dls, err := ev.ListDeadLetters(context.Background(), connect.NewRequest(&hodeiv1.ListDeadLettersRequest{}))
	if err != nil || len(dls.Msg.DeadLetters) != 0 {
		t.Errorf("ListDeadLetters: %v, %v; want none", dls, err)
	}
	if _, err := ev.ReplayDeadLetter(context.Background(), connect.NewRequest(&hodeiv1.ReplayDeadLetterRequest{Id: 424242})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("ReplayDeadLetter of an unknown id: %v, want NotFound", err)
	}
}

// tailEvents runs `hodei events tail` for jobs' JobCreated and
// JobCancelled events since the first event (so that none is missed
// while it connects), as JSON lines, until the test ends; it must then
// end on Ctrl-C, with exit code 130.
func tailEvents(t *testing.T, addr string) *bufio.Scanner {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tail := exec.CommandContext(ctx, hodeiBin, "events", "tail", "--server", addr, "--after", "1", "--type", "JobCreated", "--type", "JobCancelled", "--aggregate", "job", "-o", "json")
	stdout, err := tail.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tail.Env = append(os.Environ(), cliEnv(addr)...)
	// Ended as a user ends it, with Ctrl-C.
	tail.Cancel = func() error { return tail.Process.Signal(os.Interrupt) }
	tail.WaitDelay = 10 * time.Second
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		var ee *exec.ExitError
		if err := tail.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("events tail after Ctrl-C: %v, want exit 130", err)
		}
	})
	return bufio.NewScanner(stdout)
}
