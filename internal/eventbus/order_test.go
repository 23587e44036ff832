package eventbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func TestRollbackPublishesNothing(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	b := eventbus.NewBus(pool, busConfig(t))
	rec := newRecorder()
	b.Subscribe(eventbus.SubscriberConfig{Name: "s"}, rec.handle)
	runBus(t, b)

	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventbus.Publish(ctx, tx, jobEvent("a", 1)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	ids := publish(t, pool, jobEvent("a", 2))
	rec.waitSeen(t, 10*time.Second, ids...)
	if got := rec.all(); len(got) != 1 || got[0].ID != ids[0] || seqOf(t, got[0]) != 2 {
		t.Fatalf("delivered %v, want only event %d", got, ids[0])
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM events").Scan(&n); err != nil || n != 1 {
		t.Fatalf("events table holds %d rows (err %v), want 1", n, err)
	}
}

// race is a run of concurrent publishers, each publishing perPublisher
// events about its own aggregate in transactions of 1-10 events, sleeping
// inside some transactions (before the insert, between two inserts and
// before the commit) so that transactions commit out of xid and id order.
type race struct {
	publishers, perPublisher int
	maxSleep                 time.Duration
	seed                     uint64
}

// run publishes and returns the ids of the committed events.
func (r race) run(t testing.TB, pool *pgxpool.Pool) []int64 {
	t.Helper()
	t.Logf("race: %d publishers x %d events, seed %d", r.publishers, r.perPublisher, r.seed)
	var mu sync.Mutex
	var all []int64
	ctx := context.Background()
	var g errgroup.Group
	for p := range r.publishers {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(r.seed, uint64(p)))
			sleep := func() {
				if rng.IntN(3) == 0 {
					time.Sleep(rand.N(r.maxSleep))
				}
			}
			agg := fmt.Sprintf("agg-%02d", p)
			for seq := 0; seq < r.perPublisher; {
				n := min(1+rng.IntN(10), r.perPublisher-seq)
				events := make([]eventbus.Event, n)
				for i := range events {
					events[i] = jobEvent(agg, seq+i)
				}
				split := rng.IntN(n + 1)
				tx, err := pool.Begin(ctx)
				if err != nil {
					return err
				}
				sleep()
				ids, err := eventbus.Publish(ctx, tx, events[:split]...)
				if err != nil {
					tx.Rollback(ctx) //nolint:errcheck
					return err
				}
				sleep()
				more, err := eventbus.Publish(ctx, tx, events[split:]...)
				if err != nil {
					tx.Rollback(ctx) //nolint:errcheck
					return err
				}
				sleep()
				if err := tx.Commit(ctx); err != nil {
					return err
				}
				mu.Lock()
				all = append(all, append(ids, more...)...)
				mu.Unlock()
				seq += n
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("publish: %v", err)
	}
	return all
}

func TestConcurrentPublishersNothingSkipped(t *testing.T) {
	url := storetest.URL(t)
	pool := openPool(t, url)
	// Two buses, as two server processes would have.
	b1 := eventbus.NewBus(pool, busConfig(t))
	b2 := eventbus.NewBus(openPool(t, url), busConfig(t))
	recs := []*recorder{newRecorder(), newRecorder(), newRecorder()}
	b1.Subscribe(eventbus.SubscriberConfig{Name: "s1"}, recs[0].handle)
	b1.Subscribe(eventbus.SubscriberConfig{Name: "s2", BatchSize: 7}, recs[1].handle)
	b2.Subscribe(eventbus.SubscriberConfig{Name: "s3", BatchSize: 64}, recs[2].handle)
	runBus(t, b1)
	runBus(t, b2)

	r := race{publishers: 16, perPublisher: 5000, maxSleep: 2 * time.Millisecond, seed: rand.Uint64()}
	if testing.Short() {
		r.perPublisher = 500
	}
	start := time.Now()
	published := r.run(t, pool)
	t.Logf("published %d events in %v", len(published), time.Since(start))
	for _, rec := range recs {
		rec.waitSeen(t, 60*time.Second, published...)
	}
	t.Logf("delivered to every subscriber after %v", time.Since(start))

	// The total order every subscriber must have followed.
	want := orderedIDs(t, pool)
	if len(want) != len(published) {
		t.Fatalf("events table holds %d events, publishers committed %d", len(want), len(published))
	}
	for i, rec := range recs {
		got := rec.ids()
		if j := firstDifference(got, want); j >= 0 {
			t.Errorf("subscriber s%d: sequence differs from (xid, id) order at position %d of %d/%d", i+1, j, len(got), len(want))
		}
		if dups := len(rec.all()) - len(got); dups > 0 {
			t.Logf("subscriber s%d: %d redeliveries", i+1, dups)
		}
		// Per aggregate, events arrive in publish order.
		last := map[string]int{}
		seen := map[int64]bool{}
		for _, e := range rec.all() {
			if seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			seq := seqOf(t, e)
			if prev, ok := last[e.AggregateID]; ok && seq <= prev {
				t.Fatalf("subscriber s%d: %s event %d after %d", i+1, e.AggregateID, seq, prev)
			}
			last[e.AggregateID] = seq
		}
	}
}

// firstDifference returns the first index where a and b differ, or -1.
func firstDifference(a, b []int64) int {
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestGapGuardIsNeeded shows that without the xmin guard a subscriber
// skips events. Transaction A inserts its event first (lower xid and id)
// and stays open while B inserts and commits a later one; an unguarded
// subscriber handles B, moves its cursor past A's position, and never sees
// A. The guarded subscriber, running on the same database at the same
// time, waits for A and delivers A then B.
func TestGapGuardIsNeeded(t *testing.T) {
	url := storetest.URL(t)
	pool := openPool(t, url)
	reg := prometheus.NewRegistry()
	gcfg := busConfig(t)
	gcfg.Metrics = eventbus.NewMetrics(reg)
	guarded := eventbus.NewBus(pool, gcfg)
	cfg := busConfig(t)
	cfg.UnsafeNoGapGuard = true
	unguarded := eventbus.NewBus(openPool(t, url), cfg)
	g, u := newRecorder(), newRecorder()
	guarded.Subscribe(eventbus.SubscriberConfig{Name: "guarded"}, g.handle)
	unguarded.Subscribe(eventbus.SubscriberConfig{Name: "unguarded"}, u.handle)
	runBus(t, guarded)
	runBus(t, unguarded)

	ctx := context.Background()
	txA, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback(ctx) //nolint:errcheck
	a, err := eventbus.Publish(ctx, txA, jobEvent("a", 1))
	if err != nil {
		t.Fatal(err)
	}
	b := publish(t, pool, jobEvent("b", 1))
	u.waitSeen(t, 10*time.Second, b...)
	// The guarded subscriber, woken by B's notification too, has read B
	// while A was still open, and stopped before it.
	waitFor(t, 10*time.Second, "the guarded subscriber held back", func() bool {
		return metricValue(t, reg, "hodei_event_reads_held_back_total", "subscriber", "guarded") > 0
	})
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	c := publish(t, pool, jobEvent("c", 1))
	g.waitSeen(t, 10*time.Second, c...)
	u.waitSeen(t, 10*time.Second, c...)

	want := []int64{a[0], b[0], c[0]}
	if got := g.ids(); !slices.Equal(got, want) {
		t.Errorf("guarded subscriber got %v, want %v", got, want)
	}
	if got := u.ids(); !slices.Equal(got, want[1:]) {
		t.Errorf("unguarded subscriber got %v, want %v (event %d skipped)", got, want[1:], a[0])
	}

	// The same with the random race of TestConcurrentPublishersNothingSkipped:
	// the unguarded subscriber skips events, the guarded one does not.
	t.Run("race", func(t *testing.T) {
		url := storetest.URL(t)
		pool := openPool(t, url)
		guarded := eventbus.NewBus(pool, busConfig(t))
		unguarded := eventbus.NewBus(openPool(t, url), cfg)
		g, u := newRecorder(), newRecorder()
		guarded.Subscribe(eventbus.SubscriberConfig{Name: "guarded"}, g.handle)
		unguarded.Subscribe(eventbus.SubscriberConfig{Name: "unguarded"}, u.handle)
		runBus(t, guarded)
		runBus(t, unguarded)
		published := race{publishers: 8, perPublisher: 300, maxSleep: 2 * time.Millisecond, seed: rand.Uint64()}.run(t, pool)
		end := publish(t, pool, jobEvent("end", 1))
		g.waitSeen(t, 30*time.Second, published...)
		u.waitSeen(t, 30*time.Second, end...)
		delivered := map[int64]bool{}
		for _, id := range u.ids() {
			delivered[id] = true
		}
		skipped := 0
		for _, id := range published {
			if !delivered[id] {
				skipped++
			}
		}
		t.Logf("unguarded subscriber skipped %d of %d events", skipped, len(published))
		if skipped == 0 {
			t.Errorf("unguarded subscriber skipped nothing")
		}
	})
}
