package eventbus_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store/db"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func TestPrune(t *testing.T) {
	pool := openPool(t, storetest.URL(t))
	cfg := busConfig(t)
	cfg.Now = func() time.Time { return time.Now().Add(time.Hour) } // every event is an hour old
	b := eventbus.NewBus(pool, cfg)
	const poison = 5
	rec := newRecorder()
	b.Subscribe(eventbus.SubscriberConfig{Name: "s", MaxAttempts: 1}, func(ctx context.Context, e eventbus.Event) error {
		if seqOf(t, e) == poison {
			return errors.New("boom")
		}
		return rec.handle(ctx, e)
	})
	runBus(t, b)

	var ids []int64 // ids[i] is event seq i+1, each in its own transaction
	for seq := 1; seq <= 10; seq++ {
		ids = append(ids, publish(t, pool, jobEvent("a", seq))...)
	}
	waitCursor(t, pool, "s", ids[9])

	// A subscriber that has not read anything yet holds everything back.
	ctx := context.Background()
	q := db.New(pool)
	if err := q.EnsureCursor(ctx, db.EnsureCursorParams{Subscriber: "lagging", Xid: "0"}); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Prune(ctx, 30*time.Minute, 3); err != nil || n != 0 {
		t.Fatalf("prune with a lagging subscriber deleted %d (err %v), want 0", n, err)
	}
	c, err := q.GetCursor(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if err := q.AdvanceCursor(ctx, db.AdvanceCursorParams{Subscriber: "lagging", Xid: itoa(c.Xid), EventID: c.EventID}); err != nil {
		t.Fatal(err)
	}
	// Too young.
	if n, err := b.Prune(ctx, 2*time.Hour, 3); err != nil || n != 0 {
		t.Fatalf("prune of younger events deleted %d (err %v), want 0", n, err)
	}
	// Every delivered event but the dead letter goes, in batches of 3;
	// the last one stays, as it shares its xid with the cursors.
	if n, err := b.Prune(ctx, 30*time.Minute, 3); err != nil || n != 8 {
		t.Fatalf("prune deleted %d (err %v), want 8", n, err)
	}
	if got, want := orderedIDs(t, pool), []int64{ids[poison-1], ids[9]}; !slices.Equal(got, want) {
		t.Fatalf("events left %v, want %v", got, want)
	}
	dls, err := b.ListDeadLetters(ctx, "s", 0)
	if err != nil || len(dls) != 1 || dls[0].Event.ID != ids[poison-1] {
		t.Fatalf("dead letters %+v, %v", dls, err)
	}

	t.Run("RunRetention", func(t *testing.T) {
		if err := b.RunRetention(ctx, 0, time.Minute); err == nil {
			t.Errorf("RunRetention with a zero interval did not fail")
		}
		if _, err := pool.Exec(ctx, "DELETE FROM event_cursors WHERE subscriber = 'lagging'"); err != nil {
			t.Fatal(err)
		}
		last := publish(t, pool, jobEvent("a", 11))[0]
		waitCursor(t, pool, "s", last)
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- b.RunRetention(ctx, 10*time.Millisecond, 30*time.Minute) }()
		want := []int64{ids[poison-1], last}
		waitFor(t, 10*time.Second, "pruned", func() bool { return slices.Equal(orderedIDs(t, pool), want) })
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunRetention: %v", err)
		}
	})
}

// waitCursor waits until subscriber's stored cursor is at event id.
func waitCursor(t testing.TB, pool *pgxpool.Pool, subscriber string, id int64) {
	t.Helper()
	q := db.New(pool)
	waitFor(t, 10*time.Second, "cursor at the last event", func() bool {
		c, err := q.GetCursor(context.Background(), subscriber)
		return err == nil && c.EventID == id
	})
}
