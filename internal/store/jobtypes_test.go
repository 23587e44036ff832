package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func TestJobTypes(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	build := store.JobType{Name: "build", Retry: job.RetryPolicy{MaxAttempts: 5, RetryableExitCodes: []int32{75}, InitialBackoff: 2 * time.Second, MaxBackoff: time.Minute}}
	deploy := store.JobType{Name: "deploy", Retry: job.RetryPolicy{MaxAttempts: 1}}
	if _, err := s.SetJobTypes(ctx, []store.JobType{deploy, build}); err != nil {
		t.Fatal(err)
	}
	// Bad input changes nothing, and its error names the field.
	for _, c := range []struct {
		t     store.JobType
		field string
	}{
		{store.JobType{Name: "bad name", Retry: job.RetryPolicy{MaxAttempts: 2}}, "name"},
		{store.JobType{Name: "build", Retry: job.RetryPolicy{MaxAttempts: 101}}, "retry.max_attempts"},
		{store.JobType{Name: "build", Retry: job.RetryPolicy{RetryableExitCodes: []int32{0}}}, "retry.retryable_exit_codes"},
		{store.JobType{Name: "build", Retry: job.RetryPolicy{InitialBackoff: time.Minute, MaxBackoff: time.Second}}, "retry.max_backoff"},
	} {
		_, err := s.SetJobTypes(ctx, []store.JobType{{Name: "other", Retry: job.RetryPolicy{MaxAttempts: 2}}, c.t})
		var fe *job.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("set %+v: err = %v, want a FieldError on %s", c.t, err, c.field)
		}
	}
	got, err := s.ListJobTypes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.JobType{build, deploy}, got, cmpopts.IgnoreFields(store.JobType{}, "UpdatedAt")); diff != "" {
		t.Errorf("job types (-want +got):\n%s", diff)
	}
	one, err := s.GetJobType(ctx, "build")
	if err != nil || one.Retry.MaxAttempts != 5 || one.UpdatedAt.IsZero() {
		t.Errorf("get build: %+v %v", one, err)
	}
	if err := s.DeleteJobType(ctx, "deploy"); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{s.DeleteJobType(ctx, "deploy"), func() error { _, err := s.GetJobType(ctx, "deploy"); return err }()} {
		if !errors.Is(err, job.ErrNotFound) {
			t.Errorf("deleted type: err = %v, want ErrNotFound", err)
		}
	}
}

// TestJobTypeDefaultsAtSubmit: a job of a type gets the type's retry
// policy for what its spec leaves unset; its own values win; a job of
// no type, or of a type without defaults, gets the server's default
// max_attempts.
func TestJobTypeDefaultsAtSubmit(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	typ := job.RetryPolicy{MaxAttempts: 5, RetryableExitCodes: []int32{75}, InitialBackoff: 2 * time.Second}
	if _, err := s.SetJobTypes(ctx, []store.JobType{{Name: "build", Retry: typ}}); err != nil {
		t.Fatal(err)
	}
	specs := []job.Spec{
		{Command: []string{"true"}, Type: "build"},
		{Command: []string{"true"}, Type: "build", Retry: job.RetryPolicy{MaxAttempts: 2, RetryableExitCodes: []int32{3}}},
		{Command: []string{"true"}},
		{Command: []string{"true"}, Type: "unknown"},
	}
	jobs, _, err := s.CreateJobs(ctx, specs, job.DefaultMaxAttempts)
	if err != nil {
		t.Fatal(err)
	}
	if specs[0].Retry.MaxAttempts != 0 {
		t.Errorf("CreateJobs changed its argument: %+v", specs[0].Retry)
	}
	want := []struct {
		max   int
		retry job.RetryPolicy
	}{
		{5, typ},
		{2, job.RetryPolicy{MaxAttempts: 2, RetryableExitCodes: []int32{3}, InitialBackoff: 2 * time.Second}},
		{job.DefaultMaxAttempts, job.RetryPolicy{}},
		{job.DefaultMaxAttempts, job.RetryPolicy{}},
	}
	for i, j := range jobs {
		stored, err := s.GetJob(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.MaxAttempts != want[i].max || j.MaxAttempts != want[i].max {
			t.Errorf("job %d: max attempts %d (returned %d), want %d", i, stored.MaxAttempts, j.MaxAttempts, want[i].max)
		}
		if diff := cmp.Diff(want[i].retry, stored.Spec.Retry, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("job %d: retry policy (-want +got):\n%s", i, diff)
		}
	}
}
