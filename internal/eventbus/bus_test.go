package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store/db"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestLagMetric builds a backlog and checks the lag gauge while the
// subscriber works through it and once it has caught up.
func TestLagMetric(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	var ids []int64
	for range 10 {
		events := make([]eventbus.Event, 100)
		for i := range events {
			events[i] = jobEvent("a", len(ids)+i)
		}
		ids = append(ids, publish(t, pool, events...)...)
	}

	reg := prometheus.NewRegistry()
	cfg := busConfig(t)
	cfg.Metrics = eventbus.NewMetrics(reg)
	b := eventbus.NewBus(pool, cfg)
	blocked, release := make(chan struct{}), make(chan struct{})
	rec := newRecorder()
	b.Subscribe(eventbus.SubscriberConfig{Name: "s", BatchSize: 100}, func(ctx context.Context, e eventbus.Event) error {
		if e.ID == ids[150] {
			close(blocked)
			<-release
		}
		return rec.handle(ctx, e)
	})
	runBus(t, b)

	<-blocked // in the second batch: the lag was counted after the first
	// unless the gap guard held the read back (a transaction of another
	// test on the shared cluster was open): then it is 0 by contract.
	got := metricValue(t, reg, "hodei_event_subscriber_lag", "subscriber", "s")
	held := metricValue(t, reg, "hodei_event_reads_held_back_total", "subscriber", "s")
	if got != 900 && !(got == 0 && held > 0) {
		t.Errorf("lag after the first batch = %v (reads held back %v), want 900", got, held)
	}
	close(release)
	rec.waitSeen(t, 10*time.Second, ids...)
	waitFor(t, 10*time.Second, "lag 0", func() bool { return metricValue(t, reg, "hodei_event_subscriber_lag", "subscriber", "s") == 0 })
	if got := metricValue(t, reg, "hodei_events_delivered_total", "subscriber", "s"); got != 1000 {
		t.Errorf("delivered = %v, want 1000", got)
	}
}

// TestSafetyPollCoversMissedNotify is the one test with the safety poll
// on: an event inserted without a NOTIFY is delivered by the poll.
func TestSafetyPollCoversMissedNotify(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	cfg := busConfig(t)
	cfg.SafetyPoll = 20 * time.Millisecond
	b := eventbus.NewBus(pool, cfg)
	rec := newRecorder()
	b.Subscribe(eventbus.SubscriberConfig{Name: "s"}, rec.handle)
	runBus(t, b)

	payload, err := proto.Marshal(jobEvent("a", 1).Payload)
	if err != nil {
		t.Fatal(err)
	}
	// In replica mode the insert's trigger (the NOTIFY) does not fire.
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
		t.Fatal(err)
	}
	id, err := db.New(tx).InsertEvents(ctx, db.InsertEventsParams{
		Types: []string{"JobCreated"}, AggregateKinds: []string{"job"}, AggregateIds: []string{"a"},
		CorrelationIds: []string{""}, Payloads: [][]byte{payload},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rec.waitSeen(t, 10*time.Second, id)
}

func TestTypesFilter(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	b := eventbus.NewBus(pool, busConfig(t))
	rec := newRecorder()
	b.Subscribe(eventbus.SubscriberConfig{Name: "s", Types: []string{"JobCancelled"}}, rec.handle)
	runBus(t, b)
	publish(t, pool, jobEvent("a", 1))
	want := publish(t, pool, eventbus.New("job", "a", &hodeiv1.JobCancelled{JobId: "a"}))
	publish(t, pool, jobEvent("a", 2))
	last := publish(t, pool, eventbus.New("job", "a", &hodeiv1.JobCancelled{JobId: "a"}))
	rec.waitSeen(t, 10*time.Second, last...)
	if got := rec.ids(); !slices.Equal(got, append(want, last...)) {
		t.Errorf("delivered %v, want %v", got, append(want, last...))
	}
	// Filtered events advance the cursor too.
	waitCursor(t, pool, "s", last[0])
}

func TestTail(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	b := eventbus.NewBus(pool, busConfig(t))
	runBus(t, b)
	start := publish(t, pool, jobEvent("b", 0))[0]

	// Two tails of the same events: one gets the payloads decoded, the
	// lazy one gets them encoded (Payload nil) and decodes them itself.
	type tailed struct {
		ids   []int64
		names []string
		err   chan error
	}
	done := errors.New("done")
	tail := func(lazy bool) *tailed {
		r := &tailed{err: make(chan error, 1)}
		go func() {
			r.err <- b.Tail(context.Background(), start, eventbus.Filter{AggregateID: "b", Lazy: lazy}, func(e eventbus.Event) error {
				r.ids = append(r.ids, e.ID)
				if lazy != (e.Payload == nil) {
					return fmt.Errorf("lazy=%v tail: event %d arrived with payload %v", lazy, e.ID, e.Payload)
				}
				p, err := e.Decode()
				if err != nil {
					return err
				}
				r.names = append(r.names, p.GetJobCreated().GetName())
				if len(r.ids) == 2 {
					return done
				}
				return nil
			})
		}()
		return r
	}
	tails := []*tailed{tail(false), tail(true)}
	publish(t, pool, jobEvent("a", 1))
	want := publish(t, pool, jobEvent("b", 1), jobEvent("a", 2))[:1]
	want = append(want, publish(t, pool, jobEvent("b", 2))...)
	for i, r := range tails {
		select {
		case err := <-r.err:
			if !errors.Is(err, done) {
				t.Fatalf("tail %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("tail %d did not deliver", i)
		}
		if !slices.Equal(r.ids, want) || !slices.Equal(r.names, []string{"1", "2"}) {
			t.Errorf("tail %d got %v (payloads %q), want %v (1, 2)", i, r.ids, r.names, want)
		}
	}
}

// TestTailsAcrossFeedTrims: many more events than the process's feed holds
// (the last 8,192 to about three times as many), in batches of varied
// size. A tail running while they are published and one started after
// (behind the feed: read from the database, then served by the feed) each
// get every event exactly once, in log order.
func TestTailsAcrossFeedTrims(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	b := eventbus.NewBus(pool, busConfig(t))
	runBus(t, b)
	start := publish(t, pool, jobEvent("other", 0))[0]
	const total = 60_000
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	type tailed struct {
		ids []int64
		err error
	}
	done := errors.New("done")
	tail := func() chan tailed {
		got := make(chan tailed, 1)
		go func() {
			var r tailed
			r.err = b.Tail(ctx, start, eventbus.Filter{AggregateID: "t", Lazy: true}, func(e eventbus.Event) error {
				r.ids = append(r.ids, e.ID)
				if len(r.ids) == total {
					return done
				}
				return nil
			})
			got <- r
		}()
		return got
	}
	live := tail()
	var want []int64
	for n, size := 0, 1; n < total; size = size*3%2_999 + 1 {
		size = min(size, total-n)
		events := make([]eventbus.Event, 0, size+1)
		for i := range size {
			events = append(events, jobEvent("t", n+i))
		}
		events = append(events, jobEvent("other", n)) // not for the tails
		want = append(want, publish(t, pool, events...)[:size]...)
		n += size
	}
	late := tail()
	for name, c := range map[string]chan tailed{"live": live, "late": late} {
		select {
		case r := <-c:
			if !errors.Is(r.err, done) {
				t.Errorf("%s tail: %v", name, r.err)
			}
			if i := firstDifference(r.ids, want); i >= 0 {
				t.Errorf("%s tail: %d events, first difference at %d", name, len(r.ids), i)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s tail: not every event within a minute", name)
		}
	}
}

// TestWatch: a watch delivers like a tail, reports an unknown type in its
// filter at once instead of matching nothing, and ends with nil when its
// context ends.
func TestWatch(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	b := eventbus.NewBus(pool, busConfig(t))
	runBus(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from, err := b.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}

	select {
	case err := <-b.Watch(ctx, from, eventbus.Filter{Types: []string{"JobCreated", "JobCreatd"}}, func(eventbus.Event) error { return nil }):
		if !errors.Is(err, eventbus.ErrUnknownType) || !strings.Contains(err.Error(), `"JobCreatd"`) {
			t.Fatalf("watch with a misspelt type: %v, want ErrUnknownType naming it", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a watch with an unknown type did not end")
	}

	got := make(chan int64, 10)
	w := b.Watch(ctx, from, eventbus.Filter{Types: []string{"JobCreated"}}, func(e eventbus.Event) error {
		got <- e.ID
		return nil
	})
	id := publish(t, pool, jobEvent("w", 0))[0]
	select {
	case g := <-got:
		if g != id {
			t.Fatalf("watch got event %d, want %d", g, id)
		}
	case err := <-w:
		t.Fatalf("watch ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not deliver")
	}
	cancel()
	select {
	case err := <-w:
		if err != nil {
			t.Fatalf("watch ended with %v after its context, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end with its context")
	}
}

// TestTailAfterAnUnknownEvent: a tail asked to start after an event id
// the log does not hold ends at once with ErrUnknownEvent, so that a
// client is told instead of retrying forever.
func TestTailAfterAnUnknownEvent(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	b := eventbus.NewBus(pool, busConfig(t))
	runBus(t, b)
	last := publish(t, pool, jobEvent("u", 0))[0]
	err := b.Tail(context.Background(), last+1000, eventbus.Filter{}, func(eventbus.Event) error { return nil })
	if !errors.Is(err, eventbus.ErrUnknownEvent) {
		t.Fatalf("tail after event %d, which does not exist: %v, want ErrUnknownEvent", last+1000, err)
	}
}
