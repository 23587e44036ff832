package job

import (
	"fmt"
	"slices"
)

// DefaultMaxAttempts is the attempts a job has in all, the first
// included, when neither its spec nor its type sets max_attempts. That
// budget is for platform failures only: the job's own failures are
// retried only under a max_attempts its spec or its type sets (Decide).
const DefaultMaxAttempts = 3

// Platform reports whether c is a failure of the platform rather than of
// the job: its worker was lost (crashed, cut off, shut down, or its
// server died) or could not be provisioned. Such an attempt says nothing
// about the job, so it is retried by default.
func (c FailureClass) Platform() bool {
	return c == FailureWorkerLost || c == FailureProvisioning
}

// Or returns r with every field r leaves unset taken from d: the job
// type's defaults under a spec's own values. The backoff bounds come
// field by field, but a bound of d that would fall on the wrong side of
// one r sets is not taken (the server's default applies instead), so
// that the result is valid whenever r and d are.
func (r *RetryPolicy) Or(d RetryPolicy) RetryPolicy {
	out := *r
	if out.MaxAttempts == 0 {
		out.MaxAttempts = d.MaxAttempts
	}
	if out.Jitter == 0 {
		out.Jitter = d.Jitter
	}
	if len(out.RetryableClasses) == 0 {
		out.RetryableClasses = slices.Clone(d.RetryableClasses)
	}
	if len(out.RetryableExitCodes) == 0 {
		out.RetryableExitCodes = slices.Clone(d.RetryableExitCodes)
	}
	if out.InitialBackoff == 0 && (r.MaxBackoff == 0 || d.InitialBackoff <= r.MaxBackoff) {
		out.InitialBackoff = d.InitialBackoff
	}
	if out.MaxBackoff == 0 && (d.MaxBackoff == 0 || d.MaxBackoff >= r.InitialBackoff) {
		out.MaxBackoff = d.MaxBackoff
	}
	return out
}

// IsZero reports whether r sets nothing.
func (r *RetryPolicy) IsZero() bool {
	return r.MaxAttempts == 0 && r.InitialBackoff == 0 && r.MaxBackoff == 0 && r.Jitter == 0 &&
		len(r.RetryableClasses) == 0 && len(r.RetryableExitCodes) == 0
}

// Validate checks r by the rules of a spec's retry policy (a job type's
// defaults follow them too); errors name the field as in a spec
// ("retry.max_attempts").
func (r *RetryPolicy) Validate() error { return r.validate() }

// ValidateTypeName checks name as a job type's, by the rule of a spec's
// type, naming field in its error.
func ValidateTypeName(field, name string) error {
	if name == "" || len(name) > MaxTypeLen || !typeRe.MatchString(name) {
		return &FieldError{Field: field, Rule: fmt.Sprintf("must be 1-%d characters [A-Za-z0-9._-], starting alphanumeric", MaxTypeLen)}
	}
	return nil
}
