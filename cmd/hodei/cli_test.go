package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
	"github.com/hodei-dev/hodei/internal/testbin"
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

// TestCLIListsJobsByText: a text held by two jobs older than 20,000
// others is found by `job list --text`, which goes on through the
// server's bounded searches; the API answers the first search with no
// job, how far it searched and a token to go on. A text over 200
// characters is refused, naming the field.
func TestCLIListsJobsByText(t *testing.T) {
	t.Parallel()
	p := startServerOn(t, storetest.URL(t), freeAddr(t), "--max-workers", "0")
	c := jobClient(p.addr)
	ctx := context.Background()
	named := submit(t, c, &hodeiv1.JobSpec{Name: "Find-The-Needle", Command: []string{"true"}})
	scripted := submit(t, c, &hodeiv1.JobSpec{Script: "grep -q needle /etc/hosts\n"})
	const others = 20_050
	for n := 0; n < others; {
		specs := make([]*hodeiv1.JobSpec, min(1000, others-n))
		for i := range specs {
			specs[i] = &hodeiv1.JobSpec{Name: fmt.Sprintf("hay-%d", n+i), Command: []string{"echo", "hay"}}
		}
		if _, err := c.SubmitJobs(ctx, connect.NewRequest(&hodeiv1.SubmitJobsRequest{Specs: specs})); err != nil {
			t.Fatal(err)
		}
		n += len(specs)
	}

	r := p.hodei(t, "job", "list", "--text", "NEEDLE", "--limit", "5", "-o", "json")
	if r.code != 0 {
		t.Fatalf("job list --text: %+v", r)
	}
	var out struct{ Jobs []struct{ ID string } }
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("job list --text: %v\n%s", err, r.stdout)
	}
	var got []string
	for _, j := range out.Jobs {
		got = append(got, j.ID)
	}
	if want := []string{scripted, named}; !slices.Equal(got, want) {
		t.Errorf("job list --text NEEDLE: %v, want %v (newest first)", got, want)
	}

	first, err := c.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{Text: "needle", PageSize: 5}))
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Msg.Jobs) != 0 || first.Msg.SearchedTo == nil || first.Msg.NextPageToken == "" {
		t.Fatalf("first search: %d jobs, searched to %v, token %q; want none, how far, and a token", len(first.Msg.Jobs), first.Msg.SearchedTo, first.Msg.NextPageToken)
	}
	if to := first.Msg.SearchedTo.AsTime(); to.After(time.Now()) || time.Since(to) > 10*time.Minute {
		t.Errorf("searched to %v: not the creation time of a job submitted just now", to)
	}
	second, err := c.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{Text: "needle", PageSize: 5, PageToken: first.Msg.NextPageToken}))
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Msg.Jobs) != 2 || second.Msg.NextPageToken != "" {
		t.Errorf("second search: %d jobs, token %q; want the 2 needles and the end", len(second.Msg.Jobs), second.Msg.NextPageToken)
	}

	long := strings.Repeat("x", 201)
	if _, err := c.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{Text: long})); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "text") {
		t.Errorf("ListJobs with 201 characters of text: %v, want invalid_argument naming text", err)
	}
	if r := p.hodei(t, "job", "list", "--text", long); r.code == 0 || !strings.Contains(r.stderr, "text") {
		t.Errorf("job list --text of 201 characters: %+v, want a failure naming text", r)
	}
}

// TestJobHistoryPagesAndResumes: ListJobHistory tells a job's attempts in
// order, a page at a time; its resume token, kept while the job is
// retried, then gives only what happened since. A jobs:read token may
// call it.
func TestJobHistoryPagesAndResumes(t *testing.T) {
	t.Parallel()
	url := storetest.URL(t)
	p := startServerOn(t, url, freeAddr(t), "--max-workers", "1")
	c := jobClient(p.addr)
	ctx := context.Background()
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", "exit 3"}, Retry: &hodeiv1.RetryPolicy{MaxAttempts: 2,
		RetryableExitCodes: []int32{3}, InitialBackoff: durationpb.New(10 * time.Millisecond)}})
	pollJob(t, c, id, 30*time.Second, "final", isFinal)

	type step struct {
		Type    string
		Attempt int32
	}
	read := func(token string, size int32) ([]step, *hodeiv1.ListJobHistoryResponse) {
		t.Helper()
		var got []step
		var last *hodeiv1.ListJobHistoryResponse
		for pages := 0; ; pages++ {
			res, err := c.ListJobHistory(ctx, connect.NewRequest(&hodeiv1.ListJobHistoryRequest{Id: id, PageSize: size, PageToken: token}))
			if err != nil {
				t.Fatal(err)
			}
			if pages > 20 || int32(len(res.Msg.Entries)) > size {
				t.Fatalf("page %d of %d entries, asked for %d", pages, len(res.Msg.Entries), size)
			}
			for _, e := range res.Msg.Entries {
				got = append(got, step{e.Type, e.Attempt})
				if e.Type == "JobFailed" && (e.ExitCode != 3 || e.FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE || e.State != hodeiv1.JobState_JOB_STATE_FAILED) {
					t.Errorf("attempt %d failed with %v", e.Attempt, e)
				}
			}
			last, token = res.Msg, res.Msg.NextPageToken
			if token == "" {
				return got, last
			}
		}
	}
	got, last := read("", 2)
	want := []step{{"JobCreated", 0}, {"JobAssigned", 1}, {"JobStarted", 1}, {"JobFailed", 1}, {"JobAssigned", 2}, {"JobStarted", 2}, {"JobFailed", 2}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("history by pages of 2 (-want +got):\n%s", diff)
	}
	resume := last.ResumeToken
	if got, again := read(resume, 100); len(got) != 0 || again.ResumeToken != resume {
		t.Errorf("from the resume token with nothing new: %v and token %q, want nothing and the same token", got, again.ResumeToken)
	}

	if _, err := c.RetryJob(ctx, connect.NewRequest(&hodeiv1.RetryJobRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	// The retry gives the job two more attempts.
	eventually(t, 30*time.Second, "the retried job's attempts in the history", func() bool {
		got, _ = read(resume, 100)
		return len(got) == 6
	})
	if diff := cmp.Diff([]step{{"JobAssigned", 3}, {"JobStarted", 3}, {"JobFailed", 3}, {"JobAssigned", 4}, {"JobStarted", 4}, {"JobFailed", 4}}, got); diff != "" {
		t.Errorf("history since the resume token after a retry (-want +got):\n%s", diff)
	}

	if _, err := c.ListJobHistory(ctx, connect.NewRequest(&hodeiv1.ListJobHistoryRequest{Id: id, PageToken: "nonsense"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("a made-up page token: %v, want invalid_argument", err)
	}
	if _, err := c.ListJobHistory(ctx, connect.NewRequest(&hodeiv1.ListJobHistoryRequest{Id: "01a24365-71cf-77e0-bb71-5416c1778aea"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("an unknown job: %v, want not_found", err)
	}
	st, err := store.Open(ctx, store.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, viewer, err := st.CreateToken(ctx, "viewer", []string{string(auth.JobsRead)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	hc, _ := testbin.Client(p.addr)
	ro := hodeiv1connect.NewJobServiceClient(hc, "https://"+p.addr, connect.WithGRPC())
	req := connect.NewRequest(&hodeiv1.ListJobHistoryRequest{Id: id})
	req.Header().Set("Authorization", "Bearer "+viewer)
	res, err := ro.ListJobHistory(ctx, req)
	if err != nil {
		t.Fatalf("ListJobHistory with a jobs:read token: %v", err)
	}
	if n := len(res.Msg.Entries); n != 13 {
		t.Errorf("ListJobHistory with a jobs:read token: %d entries, want the 13", n)
	}
}
