package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// TestFollowShowsAPartialLineWhileTheJobRuns: a job that prints the start
// of a line and then waits has that start in its followed log while it
// still runs.
func TestFollowShowsAPartialLineWhileTheJobRuns(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	c := jobClient(p.addr)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", "printf 'waiting...'; sleep 5; echo ' done'"}})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := c.GetJobLogs(ctx, connect.NewRequest(&hodeiv1.GetJobLogsRequest{Id: id, Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out []byte
	for !strings.Contains(string(out), "waiting...") {
		if !s.Receive() {
			t.Fatalf("follow ended (%v) with output %q", s.Err(), out)
		}
		if j := s.Msg().Job; j != nil {
			t.Fatalf("job ended (%v) before its partial line was shown; output %q", j.State, out)
		}
		for _, ch := range s.Msg().Chunks {
			out = append(out, ch.Data...)
		}
	}
	if j := getJob(c, id); j == nil || isFinal(j) {
		t.Fatalf("partial line shown only once the job had ended (%v)", j.GetState())
	}
	for s.Receive() {
		for _, ch := range s.Msg().Chunks {
			out = append(out, ch.Data...)
		}
	}
	if want := "waiting... done\n"; string(out) != want {
		t.Errorf("followed output %q, want %q", out, want)
	}
}

// TestRunNamesAMissingWorkdir: a job whose working directory does not
// exist fails with the directory named, in `hodei run` and `job get`.
func TestRunNamesAMissingWorkdir(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	dir := filepath.Join(t.TempDir(), "missing")
	want := "workdir " + dir + ": no such file or directory"

	r := p.hodei(t, "run", "--workdir", dir, "--", "true")
	if r.code != 125 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "fork/exec") {
		t.Errorf("hodei run: code %d, stderr %q; want 125 and %q", r.code, r.stderr, want)
	}

	c := jobClient(p.addr)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}, Workdir: dir})
	j := waitJob(t, c, id, 30*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.Message, want) {
		t.Errorf("job %v, message %q; want FAILED with %q", j.State, j.Message, want)
	}
	if g := p.hodei(t, "job", "get", id); !strings.Contains(g.stdout, want) {
		t.Errorf("hodei job get:\n%s\nwant %q in it", g.stdout, want)
	}
}

// TestLogsKeepTheStartOfALineBeforeAnotherStreamsOutput: the start of a
// stdout line written before a stderr line reads back before it, not
// joined to the end of its line after the stderr line.
func TestLogsKeepTheStartOfALineBeforeAnotherStreamsOutput(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	c := jobClient(p.addr)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", "printf 'progress: '; sleep 0.2; echo warn >&2; sleep 0.2; echo done"}})
	if j := waitJob(t, c, id, 30*time.Second, isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v: %s", j.State, j.Message)
	}
	s, err := c.GetJobLogs(context.Background(), connect.NewRequest(&hodeiv1.GetJobLogsRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []string
	for s.Receive() {
		for _, ch := range s.Msg().Chunks {
			got = append(got, ch.Stream.String()+":"+string(ch.Data))
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"LOG_STREAM_STDOUT:progress: ", "LOG_STREAM_STDERR:warn\n", "LOG_STREAM_STDOUT:done\n"}
	if !slices.Equal(got, want) {
		t.Errorf("chunks %q, want %q", got, want)
	}
}

// TestMergedOutputIsStoredInWriteOrder: a job submitted with merge_output
// that writes alternately to stdout and stderr as fast as it can has its
// stored log, read back without following, in exactly the order written.
func TestMergedOutputIsStoredInWriteOrder(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	c := jobClient(p.addr)
	const n = 3000
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done`, n)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", script}, MergeOutput: true})
	if j := waitJob(t, c, id, 60*time.Second, isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v: %s", j.State, j.Message)
	}
	s, err := c.GetJobLogs(context.Background(), connect.NewRequest(&hodeiv1.GetJobLogsRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got strings.Builder
	for s.Receive() {
		for _, ch := range s.Msg().Chunks {
			if ch.Stream != hodeiv1.LogStream_LOG_STREAM_STDOUT {
				t.Fatalf("chunk on %v, want every chunk on stdout", ch.Stream)
			}
			got.Write(ch.Data)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := range n {
		fmt.Fprintf(&want, "out %d\nerr %d\n", i, i)
	}
	if got.String() != want.String() {
		g := strings.SplitN(got.String(), "\n", 5)
		t.Errorf("stored log (%d bytes) is not the write order (%d bytes); it starts %q", got.Len(), want.Len(), g[:min(4, len(g))])
	}
}

// TestLogWindowsBeforeABatch: the window before the first batch of a log's
// tail ends exactly where that tail starts, windows taken back that way
// give the whole log, and a window before a batch does not follow.
func TestLogWindowsBeforeABatch(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	c := jobClient(p.addr)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", "seq 1 20000"}})
	pollJob(t, c, id, 30*time.Second, "final", isFinal)
	ctx := context.Background()

	// read returns a window's text, the place of its first batch and
	// whether output comes before it.
	read := func(req *hodeiv1.GetJobLogsRequest) (text string, first *hodeiv1.LogChunk, skipped bool) {
		t.Helper()
		s, err := c.GetJobLogs(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var b strings.Builder
		for s.Receive() {
			skipped = skipped || s.Msg().Skipped
			for _, ch := range s.Msg().Chunks {
				if first == nil {
					first = ch
				}
				b.Write(ch.Data)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		return b.String(), first, skipped
	}
	var windows []string
	text, first, skipped := read(&hodeiv1.GetJobLogsRequest{Id: id, TailBytes: 16 << 10})
	windows = append(windows, text)
	for skipped {
		if len(windows) > 100 {
			t.Fatalf("%d windows of 16 KiB without reaching the start of the log", len(windows))
		}
		text, first, skipped = read(&hodeiv1.GetJobLogsRequest{Id: id, TailBytes: 16 << 10, BeforeAttempt: first.Attempt, BeforeSeq: first.Seq})
		if text == "" {
			t.Fatalf("an empty window before attempt %d seq %d, said to have output before it", first.GetAttempt(), first.GetSeq())
		}
		windows = append(windows, text)
	}
	if len(windows) < 3 {
		t.Errorf("%d windows of 16 KiB for a log of 109 KB", len(windows))
	}
	slices.Reverse(windows)
	var want strings.Builder
	for i := 1; i <= 20000; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	if got := strings.Join(windows, ""); got != want.String() {
		t.Errorf("the windows joined hold %d bytes, not the log's %d as written", len(got), want.Len())
	}

	s, err := c.GetJobLogs(ctx, connect.NewRequest(&hodeiv1.GetJobLogsRequest{Id: id, Follow: true, BeforeAttempt: 1, BeforeSeq: 5}))
	if err == nil {
		for s.Receive() {
		}
		err = s.Err()
		s.Close()
	}
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "before_attempt") {
		t.Errorf("follow with before_attempt: %v, want invalid_argument naming before_attempt", err)
	}
}
