package eventbus_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// Every test runs with the safety poll disabled (busConfig), so that
// delivery is shown to depend on NOTIFY and the durable cursor only;
// TestSafetyPollCoversMissedNotify is the one test that enables it.

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// openPool connects to url; the pool is closed after the test.
func openPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 40
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// busConfig is the test configuration: safety poll off, fast reconnects.
func busConfig(t testing.TB) eventbus.Config {
	return eventbus.Config{
		Logger:       storetest.Logger(t),
		SafetyPoll:   -1,
		ReconnectMin: 10 * time.Millisecond,
		ReconnectMax: 200 * time.Millisecond,
	}
}

// runBus runs b until the end of the test.
func runBus(t testing.TB, b *eventbus.Bus) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bus run: %v", err)
		}
	})
}

// jobEvent is a JobCreated event of aggregate agg whose name is seq.
func jobEvent(agg string, seq int) eventbus.Event {
	return eventbus.New("job", agg, &hodeiv1.JobCreated{JobId: agg, Name: strconv.Itoa(seq)})
}

// seqOf returns the seq of a jobEvent.
func seqOf(t testing.TB, e eventbus.Event) int {
	t.Helper()
	n, err := strconv.Atoi(e.Payload.GetJobCreated().GetName())
	if err != nil {
		t.Fatalf("event %d: not a test event: %v", e.ID, err)
	}
	return n
}

// publish publishes events in one committed transaction.
func publish(t testing.TB, pool *pgxpool.Pool, events ...eventbus.Event) []int64 {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	ids, err := eventbus.Publish(ctx, tx, events...)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return ids
}

// recorder is a handler that records what it is given.
type recorder struct {
	mu      sync.Mutex
	events  []eventbus.Event
	changed chan struct{} // closed and replaced on every call
}

func newRecorder() *recorder {
	return &recorder{changed: make(chan struct{})}
}

func (r *recorder) handle(_ context.Context, e eventbus.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// all returns the events recorded so far, in delivery order.
func (r *recorder) all() []eventbus.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]eventbus.Event(nil), r.events...)
}

// ids returns the recorded ids in delivery order, without redeliveries.
func (r *recorder) ids() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[int64]bool{}
	var out []int64
	for _, e := range r.events {
		if !seen[e.ID] {
			seen[e.ID] = true
			out = append(out, e.ID)
		}
	}
	return out
}

// waitSeen waits until every id was recorded, failing the test after
// timeout.
func (r *recorder) waitSeen(t testing.TB, timeout time.Duration, ids ...int64) {
	t.Helper()
	deadline := time.After(timeout)
	pending := map[int64]bool{}
	for _, id := range ids {
		pending[id] = true
	}
	next := 0 // r.events[:next] are accounted for
	for {
		r.mu.Lock()
		for _, e := range r.events[next:] {
			delete(pending, e.ID)
		}
		next = len(r.events)
		ch := r.changed
		r.mu.Unlock()
		if len(pending) == 0 {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("after %v, %d of %d events not delivered", timeout, len(pending), len(ids))
		}
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: still not %s", timeout, what)
		}
		<-tick.C
	}
}

// orderedIDs returns the ids of all events in delivery order.
func orderedIDs(t testing.TB, pool *pgxpool.Pool) []int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT id FROM events ORDER BY xid, id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}
