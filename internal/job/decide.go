package job

import "time"

// Result is how an attempt ended, as far as the retry policy looks.
type Result struct {
	ExitCode int
	Class    FailureClass // FailureNone for a process that ran to its end
}

// FailureClass is r's class, with a non-zero exit and no class counted as
// an exit-code failure.
func (r Result) FailureClass() FailureClass {
	if r.Class == FailureNone && r.ExitCode != 0 {
		return FailureExitCode
	}
	return r.Class
}

// NeedsRetryPolicy says whether deciding on r reads the job's retry
// policy: only a failure (not a success, not a cancel) can be retried.
func (r Result) NeedsRetryPolicy() bool {
	c := r.FailureClass()
	return c != FailureNone && c != FailureCancelled
}

// Decision is what the end of an attempt does to the attempt and its job.
type Decision struct {
	Class   FailureClass // the attempt's, FailureExitCode for a non-zero exit without one
	Attempt State        // the attempt's final state: succeeded, failed, timed_out or cancelled
	Next    State        // the job's: the attempt's state, or retrying
	// RetryAt and Backoff, when Next is retrying: when the next attempt
	// may run, and the delay that led there.
	RetryAt time.Time
	Backoff time.Duration
	// Exhausted: the failure was retryable but no attempt is left.
	Exhausted bool
	// Platform: the failure was the platform's (FailureClass.Platform),
	// not the job's, and was judged on the platform's budget.
	Platform bool
}

// Final reports whether the job ends with this decision.
func (d Decision) Final() bool { return d.Next.Final() }

// Decide applies the retry policy of j to the end of its latest attempt
// (number j.Attempt of at most j.MaxAttempts) with result r, at now: the
// one place that turns a result into states. rnd is the jitter's random
// source (see RetryPolicy.Backoff; nil: math/rand/v2). It fails with
// ErrConflict when j's state cannot move to the decided one.
//
// Attempts are one counter, j.Attempt, against one maximum, j.MaxAttempts,
// whatever failed. A platform failure (worker lost, provisioning) is
// retried while attempts are left, unless the policy lists retryable
// classes without its class. The job's own failures (an exit code, a
// timeout) are retried only when the policy asks for them and sets its
// own max_attempts (j.Spec.Retry.MaxAttempts, the spec's or its type's):
// without one, j.MaxAttempts is the server's default, a budget for
// platform failures only.
func Decide(j Job, r Result, now time.Time, rnd func() float64) (Decision, error) {
	d := Decision{Class: r.FailureClass(), Attempt: StateSucceeded}
	switch d.Class {
	case FailureNone:
	case FailureTimeout:
		d.Attempt = StateTimedOut
	case FailureCancelled:
		d.Attempt = StateCancelled
	default:
		d.Attempt = StateFailed
	}
	d.Next = d.Attempt
	if r.NeedsRetryPolicy() {
		d.Platform = d.Class.Platform()
		retry := j.Spec.Retry.Retryable(d.Class, r.ExitCode) && (d.Platform || j.Spec.Retry.MaxAttempts > 0)
		switch {
		case retry && j.Attempt < j.MaxAttempts:
			d.Next = StateRetrying
			d.Backoff = j.Spec.Retry.Backoff(j.Attempt, rnd)
			d.RetryAt = now.Add(d.Backoff)
		case retry:
			d.Exhausted = true
		}
	}
	if err := CheckTransition(j.State, d.Next); err != nil {
		return d, err
	}
	return d, nil
}
