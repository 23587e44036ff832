package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store/db"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func TestDeadLetterAndReplay(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	reg := prometheus.NewRegistry()
	cfg := busConfig(t)
	cfg.Metrics = eventbus.NewMetrics(reg)
	b := eventbus.NewBus(pool, cfg)

	const poison = 2
	var failing atomic.Bool
	failing.Store(true)
	var mu sync.Mutex
	var calls []time.Time // handler calls for the poison event
	rec := newRecorder()
	b.Subscribe(eventbus.SubscriberConfig{Name: "s", MaxAttempts: 4, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second},
		func(ctx context.Context, e eventbus.Event) error {
			if seqOf(t, e) == poison {
				mu.Lock()
				calls = append(calls, time.Now())
				mu.Unlock()
				if failing.Load() {
					return errors.New("boom")
				}
			}
			return rec.handle(ctx, e)
		})
	runBus(t, b)

	e1 := publish(t, pool, jobEvent("a", 1))[0]
	e2 := publish(t, pool, jobEvent("a", poison))[0]
	e3 := publish(t, pool, jobEvent("a", 3))[0]
	rec.waitSeen(t, 10*time.Second, e1, e3)
	if got := rec.ids(); !slices.Equal(got, []int64{e1, e3}) {
		t.Fatalf("delivered %v, want [%d %d]", got, e1, e3)
	}

	// Four calls, with growing gaps: 100ms, 200ms, 400ms, each +/-25%.
	mu.Lock()
	if len(calls) != 4 {
		t.Fatalf("poison event handled %d times, want 4", len(calls))
	}
	var gaps []time.Duration
	for i := 1; i < len(calls); i++ {
		gaps = append(gaps, calls[i].Sub(calls[i-1]))
	}
	mu.Unlock()
	t.Logf("retry gaps %v", gaps)
	for i, g := range gaps {
		if lo := time.Duration(float64(100*time.Millisecond<<i) * 0.75); g < lo {
			t.Errorf("gap %d is %v, want at least %v", i, g, lo)
		}
		if i > 0 && g <= gaps[i-1] {
			t.Errorf("gap %d (%v) not longer than gap %d (%v)", i, g, i-1, gaps[i-1])
		}
	}

	ctx := context.Background()
	dls, err := b.ListDeadLetters(ctx, "s", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].Event.ID != e2 || dls[0].Subscriber != "s" || dls[0].Attempts != 4 || dls[0].LastError != "boom" {
		t.Fatalf("dead letters %+v, want event %d after 4 attempts", dls, e2)
	}
	if seqOf(t, dls[0].Event) != poison || dls[0].Event.AggregateID != "a" {
		t.Errorf("dead letter event %+v", dls[0].Event)
	}
	if other, err := b.ListDeadLetters(ctx, "other", 0); err != nil || len(other) != 0 {
		t.Errorf("dead letters of another subscriber: %v, %v", other, err)
	}
	for _, c := range []struct {
		name string
		want float64
	}{
		{"hodei_events_dead_lettered_total", 1},
		{"hodei_event_handler_failures_total", 4},
		{"hodei_events_delivered_total", 2},
	} {
		// The handler has seen e3; the counters follow its return.
		waitFor(t, 5*time.Second, fmt.Sprintf("%s = %v", c.name, c.want), func() bool {
			return metricValue(t, reg, c.name, "subscriber", "s") == c.want
		})
	}

	// Still failing: parked again, with the attempts added up.
	if err := b.Replay(ctx, dls[0].ID); !errors.Is(err, eventbus.ErrStillFailing) {
		t.Fatalf("replay of a still failing event: %v, want ErrStillFailing", err)
	}
	if dls, err = b.ListDeadLetters(ctx, "", 0); err != nil || len(dls) != 1 || dls[0].Attempts != 8 {
		t.Fatalf("after a failed replay: %+v, %v; want one dead letter with 8 attempts", dls, err)
	}

	// Fixed: the replay delivers it, and it leaves the list.
	failing.Store(false)
	if err := b.Replay(ctx, dls[0].ID); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if got := rec.ids(); !slices.Equal(got, []int64{e1, e3, e2}) {
		t.Errorf("delivered %v, want [%d %d %d]", got, e1, e3, e2)
	}
	if dls, err := b.ListDeadLetters(ctx, "", 0); err != nil || len(dls) != 0 {
		t.Errorf("dead letters after replay: %+v, %v", dls, err)
	}
	if err := b.Replay(ctx, dls[0].ID); err == nil {
		t.Errorf("second replay of the same dead letter succeeded")
	}

	// Later events still flow.
	rec.waitSeen(t, 10*time.Second, publish(t, pool, jobEvent("a", 4))...)

	// A dead letter of a subscriber this bus does not run stays parked.
	if err := db.New(pool).ParkDeadLetter(ctx, db.ParkDeadLetterParams{Subscriber: "gone", EventID: e1, Attempts: 1, LastError: "x", Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	gone, err := b.ListDeadLetters(ctx, "gone", 0)
	if err != nil || len(gone) != 1 {
		t.Fatalf("dead letters of gone: %v, %v", gone, err)
	}
	if err := b.Replay(ctx, gone[0].ID); !errors.Is(err, eventbus.ErrUnknownSubscriber) {
		t.Errorf("replay for an unknown subscriber: %v", err)
	}
	if gone, err := b.ListDeadLetters(ctx, "gone", 0); err != nil || len(gone) != 1 {
		t.Errorf("dead letter of gone after the refused replay: %v, %v", gone, err)
	}
}

// metricValue sums the samples of the metric family name whose label has
// the given value.
func metricValue(t testing.TB, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == label && l.GetValue() == value }) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}
