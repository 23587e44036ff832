package store_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func counts(t *testing.T, s *store.Store) (jobs, queue, events int) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []struct {
		sql string
		n   *int
	}{{"SELECT count(*) FROM jobs", &jobs}, {"SELECT count(*) FROM job_queue", &queue}, {"SELECT count(*) FROM events", &events}} {
		if err := s.Pool.QueryRow(ctx, q.sql).Scan(q.n); err != nil {
			t.Fatal(err)
		}
	}
	return
}

// TestCreateJobIsAtomic injects an error after each stage of the create
// transaction: nothing may remain of the job.
func TestCreateJobIsAtomic(t *testing.T) {
	t.Parallel()
	for _, stage := range []string{"job", "queue", "event"} {
		t.Run(stage, func(t *testing.T) {
			t.Parallel()
			s := storetest.Open(t)
			boom := errors.New("injected")
			store.SetCreateHook(s, func(st string) error {
				if st == stage {
					return boom
				}
				return nil
			})
			_, _, err := s.CreateJob(context.Background(), job.Spec{Command: []string{"true"}}, 1)
			if !errors.Is(err, boom) {
				t.Fatalf("CreateJob error = %v, want the injected one", err)
			}
			if j, q, e := counts(t, s); j != 0 || q != 0 || e != 0 {
				t.Fatalf("after failed create: jobs=%d queue=%d events=%d, want all 0", j, q, e)
			}
			store.SetCreateHook(s, nil)
			if _, _, err := s.CreateJob(context.Background(), job.Spec{Command: []string{"true"}}, 1); err != nil {
				t.Fatal(err)
			}
			if j, q, e := counts(t, s); j != 1 || q != 1 || e != 1 {
				t.Fatalf("after create: jobs=%d queue=%d events=%d, want all 1", j, q, e)
			}
		})
	}
}

func TestCreateJobRejectsInvalidSpecAndWritesNothing(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	_, _, err := s.CreateJob(context.Background(), job.Spec{}, 1)
	var fe *job.FieldError
	if !errors.As(err, &fe) || fe.Field != "command" {
		t.Fatalf("error = %v, want a FieldError on command", err)
	}
	if j, q, e := counts(t, s); j != 0 || q != 0 || e != 0 {
		t.Fatalf("jobs=%d queue=%d events=%d, want all 0", j, q, e)
	}
}

func TestIdempotencyKeyReturnsTheSameJob(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	spec := job.Spec{Command: []string{"true"}, IdempotencyKey: "k1"}
	a, existing, err := s.CreateJob(context.Background(), spec, 1)
	if err != nil || existing {
		t.Fatalf("first: %v existing=%v", err, existing)
	}
	b, existing, err := s.CreateJob(context.Background(), spec, 1)
	if err != nil || !existing || b.ID != a.ID {
		t.Fatalf("second: id=%s existing=%v err=%v, want id=%s existing", b.ID, existing, err, a.ID)
	}
	if j, _, _ := counts(t, s); j != 1 {
		t.Fatalf("jobs=%d, want 1", j)
	}
}
