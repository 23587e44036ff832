package store_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

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
	}{{"SELECT count(*) FROM jobs", &jobs}, {"SELECT count(*) FROM jobs WHERE state IN ('queued', 'retrying')", &queue}, {"SELECT count(*) FROM events", &events}} {
		if err := s.SQLForTests().QueryRow(ctx, q.sql).Scan(q.n); err != nil {
			t.Fatal(err)
		}
	}
	return
}

// TestCreateJobIsAtomic injects an error after each stage of the create
// transaction: nothing may remain of the job.
func TestCreateJobIsAtomic(t *testing.T) {
	t.Parallel()
	for _, stage := range []string{"job", "event"} {
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

// TestListJobsPagesWithoutGapsUnderInserts pages through 1,000 jobs while
// other jobs are inserted: every job that existed before is seen exactly
// once.
func TestListJobsPagesWithoutGapsUnderInserts(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	want := map[string]bool{}
	for i := 0; i < 1000; i++ {
		j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		want[j.ID] = true
	}
	stop := make(chan struct{})
	inserted := make(chan int)
	go func() {
		n := 0
		defer func() { inserted <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	seen := map[string]bool{}
	f := store.ListFilter{Limit: 37}
	for pages := 0; ; pages++ {
		page, err := s.ListJobs(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page.Jobs {
			if seen[j.ID] {
				t.Fatalf("job %s listed twice", j.ID)
			}
			seen[j.ID] = true
		}
		if !page.More {
			break
		}
		f.AfterID = page.Next.ID
	}
	close(stop)
	n := <-inserted
	for id := range want {
		if !seen[id] {
			t.Fatalf("job %s missing from the listing", id)
		}
	}
	t.Logf("listed %d jobs while %d were inserted", len(seen), n)
}

// TestUUIDsAreSentAsBytes: a store connection encodes uuid.UUID values with the binary uuid codec rather than the type's
// string-producing driver.Valuer, and the values survive the round trip.
func TestUUIDsAreSentAsBytes(t *testing.T) {
	s := storetest.Open(t)
	ctx := context.Background()
	c, err := s.SQLForTests().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	m := c.Conn().TypeMap()
	// Arrays plan their elements through the same map, so the element
	// plan is what matters.
	if plan := m.PlanEncode(pgtype.UUIDOID, pgtype.BinaryFormatCode, uuid.New()); plan == nil || strings.Contains(fmt.Sprintf("%T", plan), "DriverValuer") {
		t.Errorf("uuid.UUID is encoded by %T", plan)
	}
	ids := []uuid.UUID{uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())}
	var got []uuid.UUID
	if err := c.QueryRow(ctx, "SELECT $1::uuid[]", ids).Scan(&got); err != nil {
		t.Fatal(err)
	}
	var one string
	if err := c.QueryRow(ctx, "SELECT $1::uuid::text", ids[0]).Scan(&one); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] || one != ids[0].String() {
		t.Fatalf("round trip: sent %v, got %v and %s", ids, got, one)
	}
}

// TestConcurrentSubmissionsOfOneKeyMakeOneJob: submissions racing with the
// same idempotency key all get the one job the unique index lets through.
func TestConcurrentSubmissionsOfOneKeyMakeOneJob(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	spec := job.Spec{Command: []string{"true"}, IdempotencyKey: "race"}
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var j job.Job
			j, _, errs[i] = s.CreateJob(context.Background(), spec, 1)
			ids[i] = j.ID
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("submission %d: id=%s err=%v, want id=%s", i, ids[i], errs[i], ids[0])
		}
	}
	if j, _, _ := counts(t, s); j != 1 {
		t.Fatalf("jobs=%d, want 1", j)
	}
}

// TestJobIDsCarryTheCreationTime: a job's id is a UUIDv7 of its
// created_at's millisecond, ids increase in creation order (also within a
// millisecond and when the clock goes back, where the creation time stays
// at the latest millisecond), and listing by creation time returns exactly
// the jobs created in the window, newest first.
func TestJobIDsCarryTheCreationTime(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	at := t0
	store.SetNow(s, func() time.Time { return at })
	var jobs []job.Job
	create := func(n int) {
		specs := make([]job.Spec, n)
		for i := range specs {
			specs[i] = job.Spec{Command: []string{"true"}}
		}
		js, _, err := s.CreateJobs(ctx, specs, 1)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, js...)
	}
	create(3)                            // t0
	at = t0.Add(300 * time.Microsecond)  // the same millisecond
	create(2)                            //
	at = t0.Add(1500 * time.Microsecond) // the next one
	create(1)                            //
	at = t0.Add(2 * time.Second)         // later
	create(2)                            //
	at = t0.Add(time.Second)             // the clock goes back
	create(1)                            // recorded at t0+2s
	for i, j := range jobs {
		u := uuid.MustParse(j.ID)
		sec, nsec := u.Time().UnixTime()
		if u.Version() != 7 || time.Unix(sec, nsec).UnixMilli() != j.CreatedAt.UnixMilli() {
			t.Fatalf("job %d: id %s (version %d, %d ms) for created_at %s", i, j.ID, u.Version(), time.Unix(sec, nsec).UnixMilli(), j.CreatedAt)
		}
		if i > 0 && j.ID <= jobs[i-1].ID {
			t.Fatalf("job %d: id %s not after %s", i, j.ID, jobs[i-1].ID)
		}
	}
	if got := jobs[8].CreatedAt; !got.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("created while the clock went back: %s, want %s", got, t0.Add(2*time.Second))
	}
	for _, w := range []struct {
		after, before time.Time
		want          []int // indexes into jobs, newest first
	}{
		{t0, t0.Add(time.Millisecond), []int{4, 3, 2, 1, 0}},
		{t0.Add(time.Microsecond), t0.Add(time.Millisecond), []int{4, 3}},
		{t0.Add(time.Millisecond), t0.Add(time.Second), []int{5}},
		{t0.Add(time.Second), time.Time{}, []int{8, 7, 6}},
		{time.Time{}, t0.Add(300 * time.Microsecond), []int{2, 1, 0}},
	} {
		got, err := s.ListJobs(ctx, store.ListFilter{CreatedAfter: w.after, CreatedBefore: w.before, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var ids, want []string
		for _, j := range got.Jobs {
			ids = append(ids, j.ID)
		}
		for _, i := range w.want {
			want = append(want, jobs[i].ID)
		}
		if strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Errorf("created in [%s, %s): %v, want %v", w.after, w.before, ids, want)
		}
	}
}

// TestSQLForTestsStaysInTests: only tests and the packages that serve
// them (storetest, providertest) reach behind the store.
func TestSQLForTestsStaysInTests(t *testing.T) {
	root := filepath.Join("..", "..")
	var found int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "tools" || d.Name() == "gen" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(filepath.Dir(path), "test") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(src), ".SQLForTests()") {
			t.Errorf("%s calls SQLForTests outside a test", path)
		}
		found++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found < 50 {
		t.Fatalf("looked at %d Go files only: is %s the repository?", found, root)
	}
}
