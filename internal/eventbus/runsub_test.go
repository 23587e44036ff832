package eventbus_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store/db"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// startSubscriber runs b.RunSubscriber until the returned stop is called;
// stop returns what RunSubscriber returned.
func startSubscriber(t *testing.T, b *eventbus.Bus, cfg eventbus.SubscriberConfig, h eventbus.Handler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.RunSubscriber(ctx, cfg, h) }()
	var once atomic.Bool
	stop = func() error {
		cancel()
		if once.Swap(true) {
			return nil
		}
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("subscriber %s did not stop", cfg.Name)
			return nil
		}
	}
	t.Cleanup(func() { stop() })
	return stop
}

// seriesOf counts the series of every metric family that have the label
// subscriber=sub.
func seriesOf(t testing.TB, g prometheus.Gatherer, sub string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == "subscriber" && l.GetValue() == sub }) {
				n++
			}
		}
	}
	return n
}

// cursorAt reports whether the stored cursor of sub is at event id.
func cursorAt(t testing.TB, q *db.Queries, sub string, id int64) bool {
	c, err := q.GetCursor(context.Background(), sub)
	return err == nil && c.EventID == id
}

// TestRunSubscriber: a subscriber started while the bus runs is woken by
// notifications, cannot take a name in use, keeps its cursor across runs
// and leaves no metric series behind when it stops.
func TestRunSubscriber(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	reg := prometheus.NewRegistry()
	cfg := busConfig(t)
	cfg.Metrics = eventbus.NewMetrics(reg)
	b := eventbus.NewBus(pool, cfg)
	b.Subscribe(eventbus.SubscriberConfig{Name: "fixed"}, func(context.Context, eventbus.Event) error { return nil })
	runBus(t, b)

	rec := newRecorder()
	sub := eventbus.SubscriberConfig{Name: "dyn", StartAtNow: true}
	stop := startSubscriber(t, b, sub, rec.handle)
	// The subscriber stores its cursor before it reads anything: publish
	// only once it has one, or the events might be before its start.
	ctx := context.Background()
	q := db.New(pool)
	waitFor(t, 10*time.Second, "the cursor stored", func() bool { _, err := q.GetCursor(ctx, "dyn"); return err == nil })
	for _, name := range []string{"dyn", "fixed", ""} {
		if err := b.RunSubscriber(ctx, eventbus.SubscriberConfig{Name: name}, rec.handle); err == nil {
			t.Errorf("a second subscriber named %q ran", name)
		}
	}
	ids := publish(t, pool, jobEvent("a", 1), jobEvent("a", 2))
	rec.waitSeen(t, 10*time.Second, ids...)
	// The metric counts an event once its handler returned; the cursor
	// may start a little before "now" (the gap guard: an event committed
	// just before the start can come too), so compare with what was seen.
	waitFor(t, 10*time.Second, "the delivered metric to count every handled event", func() bool {
		return metricValue(t, reg, "hodei_events_delivered_total", "subscriber", "dyn") == float64(len(rec.ids()))
	})
	waitFor(t, 10*time.Second, "the cursor at the last event", func() bool { return cursorAt(t, q, "dyn", ids[1]) })
	if err := stop(); err != nil {
		t.Fatalf("RunSubscriber returned %v after its context ended, want nil", err)
	}
	if n := seriesOf(t, reg, "dyn"); n != 0 {
		t.Errorf("%d metric series of the stopped subscriber remain", n)
	}

	// Stopped: what is published now waits for the next run.
	later := publish(t, pool, jobEvent("a", 3))[0]
	rec2 := newRecorder()
	startSubscriber(t, b, sub, rec2.handle)
	rec2.waitSeen(t, 10*time.Second, later)
	if got := rec2.ids(); !slices.Equal(got, []int64{later}) {
		t.Errorf("second run delivered %v, want only %d", got, later)
	}
}

// TestReplayWith replays the dead letter of a subscriber with the
// caller's handler when this process does not run it, with the
// subscriber's own handler when it does, and never a dead letter of
// another subscriber.
func TestReplayWith(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	reg := prometheus.NewRegistry()
	cfg := busConfig(t)
	cfg.Metrics = eventbus.NewMetrics(reg)
	b := eventbus.NewBus(pool, cfg)
	runBus(t, b)
	ctx := context.Background()

	var ownCalls atomic.Int32
	sub := eventbus.SubscriberConfig{Name: "w", MaxAttempts: 2, InitialBackoff: time.Millisecond}
	stop := startSubscriber(t, b, sub, func(context.Context, eventbus.Event) error {
		ownCalls.Add(1)
		return errors.New("down")
	})
	q := db.New(pool)
	waitFor(t, 10*time.Second, "the cursor stored", func() bool { _, err := q.GetCursor(ctx, "w"); return err == nil })
	ev := publish(t, pool, jobEvent("a", 1))[0]
	var dl eventbus.DeadLetter
	waitFor(t, 10*time.Second, "the event parked", func() bool {
		dls, err := b.ListDeadLetters(ctx, "w", 0)
		if err != nil || len(dls) != 1 {
			return false
		}
		dl = dls[0]
		return true
	})
	if dl.Event.ID != ev || dl.Attempts != 2 {
		t.Fatalf("dead letter %+v, want event %d after 2 attempts", dl, ev)
	}
	if err := q.ParkDeadLetter(ctx, db.ParkDeadLetterParams{Subscriber: "other", EventID: ev, Attempts: 1, LastError: "x", Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	others, err := b.ListDeadLetters(ctx, "other", 0)
	if err != nil || len(others) != 1 {
		t.Fatalf("dead letters of other: %v, %v", others, err)
	}

	var given atomic.Int32
	failTwice := func(context.Context, eventbus.Event) error {
		if given.Add(1) <= 2 {
			return errors.New("still down")
		}
		return nil
	}
	replayCfg := eventbus.SubscriberConfig{Name: "w", MaxAttempts: 1, InitialBackoff: time.Millisecond}
	if err := b.ReplayWith(ctx, others[0].ID, replayCfg, failTwice); !errors.Is(err, eventbus.ErrOtherSubscriber) {
		t.Errorf("replay of another subscriber's dead letter: %v, want ErrOtherSubscriber", err)
	}
	if others, err := b.ListDeadLetters(ctx, "other", 0); err != nil || len(others) != 1 {
		t.Errorf("the other subscriber's dead letter after the refused replay: %v, %v", others, err)
	}

	// Run here: its own handler, once (the replay's attempts).
	calls := ownCalls.Load()
	if err := b.ReplayWith(ctx, dl.ID, replayCfg, failTwice); !errors.Is(err, eventbus.ErrStillFailing) {
		t.Fatalf("replay to the running subscriber: %v, want ErrStillFailing", err)
	}
	if got := ownCalls.Load() - calls; got != 1 || given.Load() != 0 {
		t.Errorf("replay to the running subscriber called its handler %d times and the given one %d times, want 1 and 0", got, given.Load())
	}
	dls, err := b.ListDeadLetters(ctx, "w", 0)
	if err != nil || len(dls) != 1 || dls[0].Attempts != 3 {
		t.Fatalf("after a failed replay: %+v, %v; want one dead letter with 3 attempts", dls, err)
	}

	// Not run here: the given handler, with the given attempts, and no
	// metric series for a subscriber this process does not run.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	replayCfg.MaxAttempts = 3
	if err := b.ReplayWith(ctx, dls[0].ID, replayCfg, failTwice); err != nil {
		t.Fatalf("replay with the given handler: %v", err)
	}
	if given.Load() != 3 {
		t.Errorf("given handler called %d times, want 3", given.Load())
	}
	if dls, err := b.ListDeadLetters(ctx, "w", 0); err != nil || len(dls) != 0 {
		t.Errorf("dead letters after the replay: %+v, %v", dls, err)
	}
	if n := seriesOf(t, reg, "w"); n != 0 {
		t.Errorf("%d metric series of a subscriber not run here", n)
	}
}
