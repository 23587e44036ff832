package eventbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestPostgresRestart restarts PostgreSQL in the middle of a publish
// stream. Publishers retry failed transactions (one whose commit failed
// may or may not have committed, so the committed events are what the
// events table holds afterwards); the listener reconnects, the
// subscribers resume from their cursors and deliver every committed event
// in the common order.
func TestPostgresRestart(t *testing.T) {
	ctx := context.Background()
	cluster := startCluster(t)
	url := cluster.URL("hodei")
	pool := createDatabase(t, cluster, "hodei")
	b1 := eventbus.NewBus(pool, busConfig(t))
	b2 := eventbus.NewBus(openPool(t, url), busConfig(t))
	recs := []*recorder{newRecorder(), newRecorder()}
	b1.Subscribe(eventbus.SubscriberConfig{Name: "s1", BatchSize: 50}, recs[0].handle)
	b2.Subscribe(eventbus.SubscriberConfig{Name: "s2"}, recs[1].handle)
	runBus(t, b1)
	runBus(t, b2)
	// A live tail, as the scheduler and the dashboard use, lives through
	// the restart too.
	tail := newRecorder()
	tailCtx, stopTail := context.WithCancel(ctx)
	tailDone := make(chan error, 1)
	startID := publish(t, pool, jobEvent("start", 0))[0]
	go func() {
		tailDone <- b1.Tail(tailCtx, startID, eventbus.Filter{}, func(e eventbus.Event) error {
			return tail.handle(tailCtx, e)
		})
	}()
	defer func() {
		stopTail()
		if err := <-tailDone; err != nil {
			t.Errorf("tail: %v", err)
		}
	}()

	var committed, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			agg := fmt.Sprintf("agg-%d", p)
			for seq := 0; ; {
				select {
				case <-stop:
					return
				default:
				}
				n := 1 + rand.IntN(5)
				events := make([]eventbus.Event, n)
				for i := range events {
					events[i] = jobEvent(agg, seq+i)
				}
				if err := publishTx(ctx, pool, events); err != nil {
					// Retry the same events after a short pause.
					failed.Add(1)
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				committed.Add(int64(n))
				seq += n
			}
		})
	}
	waitFor(t, 30*time.Second, "1000 events committed", func() bool { return committed.Load() >= 1000 })
	restartedAt := committed.Load()
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "1000 more events committed", func() bool { return committed.Load() >= restartedAt+1000 })
	close(stop)
	wg.Wait()
	t.Logf("%d events committed, %d failed transactions retried", committed.Load(), failed.Load())
	if failed.Load() == 0 {
		t.Errorf("no publish failed: the restart did not hit the stream")
	}

	want := orderedIDs(t, pool)
	if want[0] != startID {
		t.Fatalf("the start event %d is not the first", startID)
	}
	if int64(len(want)) < committed.Load() {
		t.Fatalf("events table holds %d events, publishers saw %d commits", len(want), committed.Load())
	}
	for i, rec := range recs {
		rec.waitSeen(t, 30*time.Second, want...)
		got := rec.ids()
		if j := firstDifference(got, want); j >= 0 {
			t.Errorf("subscriber s%d: sequence differs from (xid, id) order at position %d of %d/%d", i+1, j, len(got), len(want))
		}
		t.Logf("subscriber s%d: %d events, %d redeliveries", i+1, len(got), len(rec.all())-len(got))
	}
	tail.waitSeen(t, 30*time.Second, want[1:]...) // after the start event
	if j := firstDifference(tail.ids(), want[1:]); j >= 0 {
		t.Errorf("tail: sequence differs from (xid, id) order at position %d", j)
	}
}

// publishTx publishes events in one transaction.
func publishTx(ctx context.Context, pool *pgxpool.Pool, events []eventbus.Event) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := eventbus.Publish(ctx, tx, events...)
		return err
	})
}

// TestStartBeforeDatabase runs a bus before its database exists: the
// subscriber keeps trying to load its cursor, then delivers.
func TestStartBeforeDatabase(t *testing.T) {
	cluster := startCluster(t)
	b := eventbus.NewBus(openPool(t, cluster.URL("later")), busConfig(t))
	rec := newRecorder()
	b.Subscribe(eventbus.SubscriberConfig{Name: "s"}, rec.handle)
	runBus(t, b)
	pool := createDatabase(t, cluster, "later")
	rec.waitSeen(t, 10*time.Second, publish(t, pool, jobEvent("a", 1))...)
}

// startCluster starts a private PostgreSQL cluster, stopped after the test.
func startCluster(t *testing.T) *pgembed.Cluster {
	t.Helper()
	cluster, err := pgembed.Start(context.Background(), storetest.TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(context.Background()); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return cluster
}

// createDatabase creates and migrates a database and connects to it.
func createDatabase(t *testing.T, cluster *pgembed.Cluster, name string) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	if err := cluster.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	pool := openPool(t, cluster.URL(name))
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}
