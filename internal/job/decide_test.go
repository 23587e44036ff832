package job

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	half := func() float64 { return 0.5 } // no jitter: the backoff itself
	// running: attempt of at most max, under a policy that sets its own
	// max_attempts (the spec's or its type's).
	running := func(attempt, max int, retry RetryPolicy) Job {
		retry.MaxAttempts = max
		return Job{ID: "j", State: StateRunning, Attempt: attempt, MaxAttempts: max, Spec: Spec{Retry: retry}}
	}
	// unset: attempt of the server's default, the policy setting no max_attempts.
	unset := func(attempt int, retry RetryPolicy) Job {
		return Job{ID: "j", State: StateRunning, Attempt: attempt, MaxAttempts: DefaultMaxAttempts, Spec: Spec{Retry: retry}}
	}
	codes := RetryPolicy{RetryableExitCodes: []int32{3}}
	lost := Result{ExitCode: -1, Class: FailureWorkerLost}
	for _, c := range []struct {
		name string
		job  Job
		r    Result
		want Decision
	}{
		{"success", running(1, 3, codes), Result{},
			Decision{Attempt: StateSucceeded, Next: StateSucceeded}},
		{"success of an assigned job (start and result together)", Job{State: StateAssigned, Attempt: 1, MaxAttempts: 1}, Result{},
			Decision{Attempt: StateSucceeded, Next: StateSucceeded}},
		{"exit code not retryable", running(1, 3, codes), Result{ExitCode: 1},
			Decision{Class: FailureExitCode, Attempt: StateFailed, Next: StateFailed}},
		{"exit code without a policy", running(1, 3, RetryPolicy{}), Result{ExitCode: 3},
			Decision{Class: FailureExitCode, Attempt: StateFailed, Next: StateFailed}},
		{"retryable exit code, attempts left", running(1, 3, codes), Result{ExitCode: 3},
			Decision{Class: FailureExitCode, Attempt: StateFailed, Next: StateRetrying, RetryAt: now.Add(time.Second), Backoff: time.Second}},
		{"retryable exit code, exhausted", running(3, 3, codes), Result{ExitCode: 3},
			Decision{Class: FailureExitCode, Attempt: StateFailed, Next: StateFailed, Exhausted: true}},
		{"retryable exit code without its own max_attempts: not on the platform's budget", unset(1, codes), Result{ExitCode: 3},
			Decision{Class: FailureExitCode, Attempt: StateFailed, Next: StateFailed}},
		{"any exit code when the class is retryable", running(1, 3, RetryPolicy{RetryableClasses: []FailureClass{FailureExitCode}}), Result{ExitCode: 7},
			Decision{Class: FailureExitCode, Attempt: StateFailed, Next: StateRetrying, RetryAt: now.Add(time.Second), Backoff: time.Second}},
		{"worker lost is retried by default", unset(1, RetryPolicy{}), lost,
			Decision{Class: FailureWorkerLost, Attempt: StateFailed, Next: StateRetrying, RetryAt: now.Add(time.Second), Backoff: time.Second, Platform: true}},
		{"worker lost, second of the default attempts", unset(2, RetryPolicy{}), lost,
			Decision{Class: FailureWorkerLost, Attempt: StateFailed, Next: StateRetrying, RetryAt: now.Add(2 * time.Second), Backoff: 2 * time.Second, Platform: true}},
		{"worker lost, the default attempts exhausted", unset(DefaultMaxAttempts, RetryPolicy{}), lost,
			Decision{Class: FailureWorkerLost, Attempt: StateFailed, Next: StateFailed, Exhausted: true, Platform: true}},
		{"worker lost, the spec's max_attempts wins", running(1, 1, RetryPolicy{}), lost,
			Decision{Class: FailureWorkerLost, Attempt: StateFailed, Next: StateFailed, Exhausted: true, Platform: true}},
		{"worker lost shares the counter with the job's own failures", running(3, 4, codes), lost,
			Decision{Class: FailureWorkerLost, Attempt: StateFailed, Next: StateRetrying, RetryAt: now.Add(4 * time.Second), Backoff: 4 * time.Second, Platform: true}},
		{"provisioning is retried by default", unset(1, RetryPolicy{}), Result{ExitCode: -1, Class: FailureProvisioning},
			Decision{Class: FailureProvisioning, Attempt: StateFailed, Next: StateRetrying, RetryAt: now.Add(time.Second), Backoff: time.Second, Platform: true}},
		{"worker lost, not a listed class", running(1, 3, RetryPolicy{RetryableClasses: []FailureClass{FailureTimeout}}), lost,
			Decision{Class: FailureWorkerLost, Attempt: StateFailed, Next: StateFailed, Platform: true}},
		{"invalid is never retried", running(1, 3, RetryPolicy{RetryableClasses: []FailureClass{FailureExitCode}}), Result{ExitCode: -1, Class: FailureInvalid},
			Decision{Class: FailureInvalid, Attempt: StateFailed, Next: StateFailed}},
		{"timeout, attempts left", running(1, 3, RetryPolicy{}), Result{ExitCode: -1, Class: FailureTimeout},
			Decision{Class: FailureTimeout, Attempt: StateTimedOut, Next: StateRetrying, RetryAt: now.Add(time.Second), Backoff: time.Second}},
		{"timeout, exhausted", running(3, 3, RetryPolicy{}), Result{ExitCode: -1, Class: FailureTimeout},
			Decision{Class: FailureTimeout, Attempt: StateTimedOut, Next: StateTimedOut, Exhausted: true}},
		{"timeout without its own max_attempts: the job's failure, not retried", unset(1, RetryPolicy{}), Result{ExitCode: -1, Class: FailureTimeout},
			Decision{Class: FailureTimeout, Attempt: StateTimedOut, Next: StateTimedOut}},
		{"cancelled, whatever the policy", running(1, 3, RetryPolicy{RetryableClasses: []FailureClass{FailureExitCode}}), Result{ExitCode: -1, Class: FailureCancelled},
			Decision{Class: FailureCancelled, Attempt: StateCancelled, Next: StateCancelled}},
		{"backoff doubles per failed attempt", running(3, 5, RetryPolicy{RetryableExitCodes: []int32{3}, InitialBackoff: time.Second}), Result{ExitCode: 3},
			Decision{Class: FailureExitCode, Attempt: StateFailed, Next: StateRetrying, RetryAt: now.Add(4 * time.Second), Backoff: 4 * time.Second}},
		{"backoff capped", running(9, 10, RetryPolicy{RetryableExitCodes: []int32{3}, MaxBackoff: 5 * time.Second}), Result{ExitCode: 3},
			Decision{Class: FailureExitCode, Attempt: StateFailed, Next: StateRetrying, RetryAt: now.Add(5 * time.Second), Backoff: 5 * time.Second}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decide(c.job, c.r, now, half)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
			if got.Final() != c.want.Next.Final() || got.Final() == (got.Next == StateRetrying) {
				t.Errorf("Final() = %v for next state %s", got.Final(), got.Next)
			}
		})
	}
}

// TestDecideRefusesAJobThatIsNotRunning: only an assigned or running job
// has an attempt to end.
func TestDecideRefusesAJobThatIsNotRunning(t *testing.T) {
	for _, st := range []State{StateQueued, StateRetrying, StateSucceeded, StateFailed, StateCancelled, StateTimedOut} {
		_, err := Decide(Job{State: st, Attempt: 1, MaxAttempts: 3}, Result{ExitCode: 3}, time.Now(), nil)
		if !errors.Is(err, ErrConflict) {
			t.Errorf("Decide on a %s job: err = %v, want ErrConflict", st, err)
		}
	}
}

// TestDecideJitter: the delay of a retry stays within the jitter's bounds
// around the backoff, at both ends of the random source.
func TestDecideJitter(t *testing.T) {
	now := time.Now()
	j := Job{State: StateRunning, Attempt: 2, MaxAttempts: 3, Spec: Spec{Retry: RetryPolicy{InitialBackoff: 10 * time.Second, Jitter: 0.2}}}
	for _, c := range []struct {
		rnd  float64
		want time.Duration
	}{
		{0, 16 * time.Second},        // 20 s * (1 - 0.2)
		{0.5, 20 * time.Second},      // 20 s
		{0.999999, 24 * time.Second}, // 20 s * (1 + 0.2), less a hair
	} {
		d, err := Decide(j, Result{ExitCode: -1, Class: FailureWorkerLost}, now, func() float64 { return c.rnd })
		if err != nil {
			t.Fatal(err)
		}
		if diff := d.Backoff - c.want; diff < -time.Millisecond || diff > time.Millisecond || !d.RetryAt.Equal(now.Add(d.Backoff)) {
			t.Errorf("rnd %v: backoff %s, retry at %s after now, want %s", c.rnd, d.Backoff, d.RetryAt.Sub(now), c.want)
		}
	}
	// The default source stays within the default jitter.
	j.Spec.Retry.Jitter = 0
	for range 100 {
		d, err := Decide(j, Result{ExitCode: -1, Class: FailureWorkerLost}, now, nil)
		if err != nil {
			t.Fatal(err)
		}
		if lo, hi := 20*time.Second*3/4, 20*time.Second*5/4; d.Backoff < lo || d.Backoff > hi {
			t.Fatalf("backoff %s outside [%s, %s]", d.Backoff, lo, hi)
		}
	}
}
