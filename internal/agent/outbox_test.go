package agent

import (
	"testing"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// TestOutboxListsItsAttemptsWithTheirJobs: after a reconnect the hello
// names every attempt with unacknowledged reports by job id and token (the
// server refuses one without a job id), once each, in order.
func TestOutboxListsItsAttemptsWithTheirJobs(t *testing.T) {
	o := newOutbox(10)
	o.add(&pending{jobID: "job-a", token: 1, seq: 1})
	o.add(&pending{jobID: "job-b", token: 2, finished: true})
	o.add(&pending{jobID: "job-a", token: 1, finished: true})
	got := o.attempts()
	want := []*hodeiv1.RunningAttempt{{JobId: "job-a", FencingToken: 1}, {JobId: "job-b", FencingToken: 2}}
	if len(got) != len(want) {
		t.Fatalf("attempts = %v, want %v", got, want)
	}
	for i := range want {
		if got[i].JobId != want[i].JobId || got[i].FencingToken != want[i].FencingToken {
			t.Errorf("attempt %d = %v, want %v", i, got[i], want[i])
		}
	}
}
