package main

import (
	"context"
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
