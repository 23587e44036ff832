package job

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRetryPolicyOr: a spec's own values win, field by field, over its
// type's; a type's backoff bound that would contradict the spec's other
// bound is left out.
func TestRetryPolicyOr(t *testing.T) {
	typ := RetryPolicy{MaxAttempts: 5, InitialBackoff: 2 * time.Second, MaxBackoff: 10 * time.Second, Jitter: 0.1,
		RetryableClasses: []FailureClass{FailureWorkerLost}, RetryableExitCodes: []int32{7}}
	for _, c := range []struct {
		name       string
		spec, want RetryPolicy
	}{
		{"nothing set: the type's", RetryPolicy{}, typ},
		{"the spec's values win", RetryPolicy{MaxAttempts: 2, RetryableExitCodes: []int32{3}},
			RetryPolicy{MaxAttempts: 2, InitialBackoff: 2 * time.Second, MaxBackoff: 10 * time.Second, Jitter: 0.1,
				RetryableClasses: []FailureClass{FailureWorkerLost}, RetryableExitCodes: []int32{3}}},
		{"a type's max backoff below the spec's initial is left out", RetryPolicy{InitialBackoff: time.Minute},
			RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Minute, Jitter: 0.1,
				RetryableClasses: []FailureClass{FailureWorkerLost}, RetryableExitCodes: []int32{7}}},
		{"a type's initial backoff above the spec's max is left out", RetryPolicy{MaxBackoff: time.Second},
			RetryPolicy{MaxAttempts: 5, MaxBackoff: time.Second, Jitter: 0.1,
				RetryableClasses: []FailureClass{FailureWorkerLost}, RetryableExitCodes: []int32{7}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := c.spec.Or(typ)
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("Or (-want +got):\n%s", diff)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("merged policy invalid: %v", err)
			}
		})
	}
	if got := (&RetryPolicy{}).Or(RetryPolicy{}); !got.IsZero() {
		t.Errorf("zero or zero = %+v, want zero", got)
	}
}

// TestRetryPolicyValidateNamesTheField: a job type's policy is checked
// by the spec's rules, the field named as in a spec.
func TestRetryPolicyValidateNamesTheField(t *testing.T) {
	for _, c := range []struct {
		p     RetryPolicy
		field string
	}{
		{RetryPolicy{MaxAttempts: -1}, "retry.max_attempts"},
		{RetryPolicy{MaxAttempts: MaxAttemptsLimit + 1}, "retry.max_attempts"},
		{RetryPolicy{InitialBackoff: 2 * time.Hour}, "retry.initial_backoff"},
		{RetryPolicy{InitialBackoff: time.Minute, MaxBackoff: time.Second}, "retry.max_backoff"},
		{RetryPolicy{RetryableExitCodes: []int32{256}}, "retry.retryable_exit_codes"},
		{RetryPolicy{RetryableClasses: []FailureClass{FailureCancelled}}, "retry.retryable_classes"},
	} {
		err := c.p.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%+v: err = %v, want a FieldError on %s", c.p, err, c.field)
		}
	}
	if err := (&RetryPolicy{MaxAttempts: 3, RetryableExitCodes: []int32{3}}).Validate(); err != nil {
		t.Errorf("valid policy: %v", err)
	}
}

func TestPlatformClasses(t *testing.T) {
	var got []FailureClass
	for _, c := range FailureClasses {
		if c.Platform() {
			got = append(got, c)
		}
	}
	if diff := cmp.Diff([]FailureClass{FailureWorkerLost, FailureProvisioning}, got); diff != "" {
		t.Errorf("platform classes (-want +got):\n%s", diff)
	}
}
