package job

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestHistory(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, c := range []struct {
		name string
		job  Job
		want []HistoryEntry
	}{{
		name: "waiting",
		job:  Job{State: StateQueued, CreatedAt: at(0)},
		want: []HistoryEntry{{Step: StepCreated, Time: at(0)}},
	}, {
		name: "cancelled before any attempt",
		job:  Job{State: StateCancelled, CreatedAt: at(0), FinishedAt: at(5), Message: "cancelled by alice"},
		want: []HistoryEntry{{Step: StepCreated, Time: at(0)},
			{Step: StepCancelled, Time: at(5), State: StateCancelled, Message: "cancelled by alice"}},
	}, {
		name: "failed, retried, running",
		job: Job{State: StateRunning, Attempt: 2, CreatedAt: at(0), Attempts: []Attempt{
			// stored latest first does not matter: attempts are ordered by number
			{Number: 2, WorkerID: "w2", State: StateRunning, AssignedAt: at(9), StartedAt: at(10)},
			{Number: 1, WorkerID: "w1", State: StateFailed, AssignedAt: at(1), StartedAt: at(2), FinishedAt: at(3),
				ExitCode: 3, FailureClass: FailureExitCode, Message: "exit status 3"}}},
		want: []HistoryEntry{{Step: StepCreated, Time: at(0)},
			{Step: StepAssigned, Time: at(1), Attempt: 1, WorkerID: "w1"},
			{Step: StepStarted, Time: at(2), Attempt: 1, WorkerID: "w1"},
			{Step: StepEnded, Time: at(3), Attempt: 1, WorkerID: "w1", State: StateFailed, ExitCode: 3, Class: FailureExitCode, Message: "exit status 3"},
			{Step: StepAssigned, Time: at(9), Attempt: 2, WorkerID: "w2"},
			{Step: StepStarted, Time: at(10), Attempt: 2, WorkerID: "w2"}},
	}, {
		name: "cancelled while it ran: the attempt's end tells it",
		job: Job{State: StateCancelled, Attempt: 1, CreatedAt: at(0), FinishedAt: at(4), Attempts: []Attempt{
			{Number: 1, WorkerID: "w1", State: StateCancelled, AssignedAt: at(1), StartedAt: at(2), FinishedAt: at(4), Signal: "SIGTERM", FailureClass: FailureCancelled}}},
		want: []HistoryEntry{{Step: StepCreated, Time: at(0)},
			{Step: StepAssigned, Time: at(1), Attempt: 1, WorkerID: "w1"},
			{Step: StepStarted, Time: at(2), Attempt: 1, WorkerID: "w1"},
			{Step: StepEnded, Time: at(4), Attempt: 1, WorkerID: "w1", State: StateCancelled, Signal: "SIGTERM", Class: FailureCancelled}},
	}, {
		name: "lost before it started, cancelled while it waited for its retry",
		job: Job{State: StateCancelled, Attempt: 1, CreatedAt: at(0), FinishedAt: at(8), Attempts: []Attempt{
			{Number: 1, WorkerID: "w1", State: StateFailed, AssignedAt: at(1), FinishedAt: at(6), FailureClass: FailureWorkerLost}}},
		want: []HistoryEntry{{Step: StepCreated, Time: at(0)},
			{Step: StepAssigned, Time: at(1), Attempt: 1, WorkerID: "w1"},
			{Step: StepEnded, Time: at(6), Attempt: 1, WorkerID: "w1", State: StateFailed, Class: FailureWorkerLost},
			{Step: StepCancelled, Time: at(8), Attempt: 1, State: StateCancelled}},
	}} {
		t.Run(c.name, func(t *testing.T) {
			got := History(c.job)
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Fatalf("history (-want +got):\n%s", diff)
			}
			for i := 1; i < len(got); i++ {
				if !got[i-1].Key().Less(got[i].Key()) {
					t.Errorf("entry %d's key %v is not after entry %d's %v", i, got[i].Key(), i-1, got[i-1].Key())
				}
			}
		})
	}
}
