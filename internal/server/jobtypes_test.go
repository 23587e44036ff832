package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestLoadJobTypes: a YAML (or JSON) file of job type defaults replaces
// the stored types of the same names and leaves the others; a bad entry,
// named in the error, stores nothing.
func TestLoadJobTypes(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	ctx := context.Background()
	if _, err := st.SetJobTypes(ctx, []store.JobType{{Name: "build", Retry: job.RetryPolicy{MaxAttempts: 9}}, {Name: "kept", Retry: job.RetryPolicy{MaxAttempts: 2}}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("types.yaml", `
build:
  max_attempts: 5
  retryable_exit_codes: [75, 76]
  initial_backoff: 2s
  maxBackoff: 1m
deploy:
  retryable_classes: [worker_lost]
`)
	n, err := LoadJobTypes(ctx, st, good)
	if err != nil || n != 2 {
		t.Fatalf("load: %d %v", n, err)
	}
	want := []store.JobType{
		{Name: "build", Retry: job.RetryPolicy{MaxAttempts: 5, RetryableExitCodes: []int32{75, 76}, InitialBackoff: 2 * time.Second, MaxBackoff: time.Minute}},
		{Name: "deploy", Retry: job.RetryPolicy{RetryableClasses: []job.FailureClass{job.FailureWorkerLost}}},
		{Name: "kept", Retry: job.RetryPolicy{MaxAttempts: 2}},
	}
	check := func() {
		t.Helper()
		got, err := st.ListJobTypes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(store.JobType{}, "UpdatedAt")); diff != "" {
			t.Errorf("job types (-want +got):\n%s", diff)
		}
	}
	check()
	for _, c := range []struct{ file, text, wantErr string }{
		{"typo.yaml", "build:\n  max_attempt: 5\n", `job type "build"`},
		{"range.json", `{"build": {"max_attempts": 1}, "zzz": {"max_attempts": 500}}`, "retry.max_attempts"},
		{"name.yaml", "build:\n  max_attempts: 1\n'bad name':\n  max_attempts: 1\n", "name"},
		{"list.yaml", "- build\n", "want a map"},
	} {
		_, err := LoadJobTypes(ctx, st, write(c.file, c.text))
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: err = %v, want one naming %s", c.file, err, c.wantErr)
		}
	}
	check() // nothing of the bad files was stored
	if _, err := LoadJobTypes(ctx, st, filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
