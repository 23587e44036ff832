package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestClaimSkipsWorkersThatAreNotConnected: no job is claimed for a
// worker that never connected, nor for one that connected draining (its
// hello said so).
func TestClaimSkipsWorkersThatAreNotConnected(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
		t.Fatal(err)
	}
	w, _, _ := s.NewWorker(ctx, "test", "", nil, time.Minute) // provisioning, never connected
	if as, err := s.Claim(ctx, store.WorkerMatch{ID: w}, 1); err != nil || len(as) != 0 {
		t.Fatalf("claim for a worker that is not connected: %v %v", as, err)
	}
	d, token, err := s.NewWorker(ctx, "test", "", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, cred, _, err := s.Enroll(ctx, store.Enrollment{Token: token, Hostname: "host", Version: "test", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	if dw, err := s.ConnectWorker(ctx, d, cred, "", "test", true); err != nil || dw.State != "draining" {
		t.Fatalf("connect draining: %+v, %v; want state draining", dw, err)
	}
	if as, err := s.Claim(ctx, store.WorkerMatch{ID: d}, 1); err != nil || len(as) != 0 {
		t.Fatalf("claim for a worker that connected draining: %v %v", as, err)
	}
	if as, err := s.Claim(ctx, store.WorkerMatch{ID: storetest.ConnectedWorker(t, s)}, 1); err != nil || len(as) != 1 {
		t.Fatalf("claim for a connected worker: %v %v", as, err)
	}
}

// TestClaimSlotsSpreadsJobsOverConnectedWorkers: one claim fills the slots
// of several workers in order; a worker that is not connected gets none.
func TestClaimSlotsSpreadsJobsOverConnectedWorkers(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	var ids []string
	for _, prio := range []int32{0, 5, 0, 9, 0} {
		j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, Priority: prio}, 1)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	a, b := storetest.ConnectedWorker(t, s), storetest.ConnectedWorker(t, s)
	gone, _, _ := s.NewWorker(ctx, "test", "", nil, time.Minute)
	as, _, err := s.ClaimSlots(ctx, store.WorkerMatch{}, []string{a, b, gone, a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got, jobs []string
	for _, x := range as {
		got = append(got, x.WorkerID)
		jobs = append(jobs, x.JobID)
		// The attempt row says the same as the assignment.
		var worker string
		var token int64
		if err := s.SQLForTests().QueryRow(ctx, "SELECT worker_id::text, token FROM attempts WHERE job_id = $1", x.JobID).Scan(&worker, &token); err != nil {
			t.Fatal(err)
		}
		if worker != x.WorkerID || token != x.Token {
			t.Fatalf("job %s: attempt row has worker %s token %d, assignment says %s and %d", x.JobID, worker, token, x.WorkerID, x.Token)
		}
	}
	if want := []string{a, b, a}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("claimed for %v, want %v (the slot of the worker that is not connected skipped)", got, want)
	}
	// Priority first, then submission order: the k-th job has the k-th slot.
	if want := []string{ids[3], ids[1], ids[0]}; strings.Join(jobs, ",") != strings.Join(want, ",") {
		t.Fatalf("claimed jobs %v, want %v", jobs, want)
	}
	var queued int
	if err := s.SQLForTests().QueryRow(ctx, "SELECT count(*) FROM jobs WHERE state IN ('queued', 'retrying')").Scan(&queued); err != nil {
		t.Fatal(err)
	}
	if queued != 2 {
		t.Fatalf("%d jobs left in the queue, want 2", queued)
	}
}

// TestClaimRespectsWorkerLimits: a job needing more CPU or memory than a
// worker allows per job is not given to it.
func TestClaimRespectsWorkerLimits(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	big, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, CPUMillis: 2000, MemoryMiB: 64}, 1)
	if err != nil {
		t.Fatal(err)
	}
	small, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, CPUMillis: 500, MemoryMiB: 64}, 1)
	if err != nil {
		t.Fatal(err)
	}
	w := store.WorkerMatch{ID: storetest.ConnectedWorker(t, s), CPUMillis: 1000, MemoryMiB: 128}
	as, err := s.Claim(ctx, w, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 1 || as[0].JobID != small.ID {
		t.Fatalf("claimed %+v, want only the 500m job", as)
	}
	if as, err := s.Claim(ctx, store.WorkerMatch{ID: storetest.ConnectedWorker(t, s)}, 2); err != nil || len(as) != 1 || as[0].JobID != big.ID {
		t.Fatalf("a worker without stated limits claimed %+v (%v), want the 2000m job", as, err)
	}
}

// TestHeartbeatsAndClaimsDoNotDeadlock: the heartbeat write and a claim
// lock the same worker rows; taken in different orders, the two deadlock
// and PostgreSQL breaks it only after deadlock_timeout (a second in which
// dispatch stands still). Both must lock in id order. Two of each run for
// two seconds; before the fix this failed in every run.
func TestHeartbeatsAndClaimsDoNotDeadlock(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	var ids []string
	for range 8 {
		ids = append(ids, storetest.ConnectedWorker(t, s))
	}
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 2 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				seen := map[string]time.Time{}
				for _, id := range ids {
					seen[id] = time.Now()
				}
				if _, err := s.TouchWorkers(ctx, seen); err != nil {
					errs <- fmt.Errorf("heartbeats: %w", err)
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				// Slots in a shuffled order: the claim must not lock in it.
				slots := slices.Clone(ids)
				rand.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
				if _, _, err := s.ClaimSlots(ctx, store.WorkerMatch{}, slots, nil); err != nil {
					errs <- fmt.Errorf("claim: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestClaimStartsAfterTheCursor: a claim from a cursor takes the jobs
// after it in dispatch order (its priority after its id, then lower
// priorities) and returns where it stopped: its last job, or the end when
// it found fewer jobs than slots.
func TestClaimStartsAfterTheCursor(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	submit := func(priority int32) uuid.UUID {
		t.Helper()
		j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, Priority: priority}, 1)
		if err != nil {
			t.Fatal(err)
		}
		return uuid.MustParse(j.ID)
	}
	behind := submit(5)
	at := submit(5)
	after := submit(5)
	lower := submit(1)
	higher := submit(9)
	w := storetest.ConnectedWorker(t, s)
	claim := func(from *store.Cursor, slots int) ([]uuid.UUID, *store.Cursor) {
		t.Helper()
		as, next, err := s.ClaimSlots(ctx, store.WorkerMatch{ID: w}, slices.Repeat([]string{w}, slots), from)
		if err != nil {
			t.Fatal(err)
		}
		var got []uuid.UUID
		for _, a := range as {
			got = append(got, jid(a))
		}
		return got, next
	}
	got, next := claim(&store.Cursor{Priority: 5, ID: at}, 6)
	if want := []uuid.UUID{after, lower}; !slices.Equal(got, want) {
		t.Fatalf("claim after %v took %v, want %v (after it, then the lower priority)", at, got, want)
	}
	if next == nil || *next != store.End {
		t.Fatalf("cursor after a claim that found fewer jobs than slots: %v, want the end", next)
	}
	if got, again := claim(next, 6); len(got) != 0 || again == nil || *again != store.End {
		t.Fatalf("claim from the end: %v, cursor %v (want none, the end)", got, again)
	}
	got, next = claim(nil, 1)
	if want := []uuid.UUID{higher}; !slices.Equal(got, want) {
		t.Fatalf("claim of one from the head took %v, want %v", got, want)
	}
	if want := (store.Cursor{Priority: 9, ID: higher}); next == nil || *next != want {
		t.Fatalf("cursor %v, want the job taken %v", next, want)
	}
	if got, _ := claim(next, 6); !slices.Equal(got, []uuid.UUID{behind, at}) {
		t.Fatalf("claim after the first job took %v, want the two jobs passed over before %v", got, []uuid.UUID{behind, at})
	}
}

// TestClaimWithNoUsableSlotKeepsTheCursor: a claim for workers that are
// no longer connected walks nothing, and says so by returning its cursor.
func TestClaimWithNoUsableSlotKeepsTheCursor(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
		t.Fatal(err)
	}
	gone, _, _ := s.NewWorker(ctx, "test", "", nil, time.Minute)
	from := &store.Cursor{Priority: 0}
	as, next, err := s.ClaimSlots(ctx, store.WorkerMatch{ID: gone}, []string{gone}, from)
	if err != nil || len(as) != 0 || next != from {
		t.Fatalf("claim for a worker not connected: %v, cursor %v, %v; want nothing and the same cursor", as, next, err)
	}
}
