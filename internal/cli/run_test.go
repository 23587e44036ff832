package cli

import (
	"testing"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

func TestRunExitCode(t *testing.T) {
	const (
		succeeded = hodeiv1.JobState_JOB_STATE_SUCCEEDED
		failed    = hodeiv1.JobState_JOB_STATE_FAILED
		timedOut  = hodeiv1.JobState_JOB_STATE_TIMED_OUT
		cancelled = hodeiv1.JobState_JOB_STATE_CANCELLED
		exitCode  = hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE
	)
	tests := []struct {
		name    string
		job     *hodeiv1.Job
		want    int
		wantWhy string
	}{
		{name: "succeeded", job: &hodeiv1.Job{State: succeeded}, want: 0},
		{name: "exit code", job: &hodeiv1.Job{State: failed, FailureClass: exitCode, ExitCode: 3}, want: 3},
		{name: "exit code 255", job: &hodeiv1.Job{State: failed, FailureClass: exitCode, ExitCode: 255}, want: 255},
		{
			name: "killed by signal",
			job: &hodeiv1.Job{State: failed, FailureClass: exitCode, ExitCode: -1, Attempt: 2, Attempts: []*hodeiv1.Attempt{
				{Number: 1, Signal: "SIGTERM"}, {Number: 2, Signal: "SIGKILL"},
			}},
			want: 137,
		},
		{name: "failed without a usable code", job: &hodeiv1.Job{State: failed, FailureClass: exitCode, ExitCode: 0}, want: 1},
		{name: "timed out", job: &hodeiv1.Job{State: timedOut, Message: "after 30s"}, want: 124, wantWhy: "timed out: after 30s"},
		{name: "failed with class timeout", job: &hodeiv1.Job{State: failed, FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_TIMEOUT}, want: 124, wantWhy: "timed out"},
		{name: "cancelled", job: &hodeiv1.Job{State: cancelled}, want: 130, wantWhy: "was cancelled"},
		{
			name:    "worker lost",
			job:     &hodeiv1.Job{State: failed, FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST, Message: "no heartbeat"},
			want:    125,
			wantWhy: "failed: worker_lost: no heartbeat",
		},
		{name: "provisioning", job: &hodeiv1.Job{State: failed, FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_PROVISIONING}, want: 125, wantWhy: "failed: provisioning"},
		{name: "invalid", job: &hodeiv1.Job{State: failed, FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_INVALID}, want: 125, wantWhy: "failed: invalid"},
		{name: "not final", job: &hodeiv1.Job{State: hodeiv1.JobState_JOB_STATE_RUNNING}, want: 125, wantWhy: "ended in state running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := runExitCode(tt.job)
			if got != tt.want || why != tt.wantWhy {
				t.Errorf("runExitCode = %d, %q; want %d, %q", got, why, tt.want, tt.wantWhy)
			}
		})
	}
}

func TestSignalNumber(t *testing.T) {
	for in, want := range map[string]int{"SIGKILL": 9, "KILL": 9, "killed": 9, "signal: killed": 9, "15": 15, "sigterm": 15, "SIGSEGV": 11} {
		if got, ok := signalNumber(in); !ok || got != want {
			t.Errorf("signalNumber(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "SIGWHAT", "0", "200"} {
		if got, ok := signalNumber(in); ok {
			t.Errorf("signalNumber(%q) = %d, true; want not ok", in, got)
		}
	}
}
