package store_test

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store"
)

// TestUpgradeKeepsEventIDsAndCursors migrates a database whose events are
// rows of the events table (before migration 13): every event keeps its id,
// type and payload, a subscriber's cursor resumes exactly after the event
// it had reached, a parked event can still be listed, and new events get
// ids above every old one.
func TestUpgradeKeepsEventIDsAndCursors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := databaseAt(t, 12)
	payload := func(job string) []byte {
		b, err := proto.Marshal(&hodeiv1.EventPayload{Kind: &hodeiv1.EventPayload_JobCreated{JobCreated: &hodeiv1.JobCreated{JobId: job}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Three events in two transactions; the subscriber "s" has handled the
	// first, and "parked" parked the second.
	var old []int64
	for _, jobs := range [][]string{{"a", "b"}, {"c"}} {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for _, j := range jobs {
				var id int64
				if err := tx.QueryRow(ctx, `INSERT INTO events (type, aggregate_kind, aggregate_id, payload) VALUES ('JobCreated', 'job', $1, $2) RETURNING id`,
					j, payload(j)).Scan(&id); err != nil {
					return err
				}
				old = append(old, id)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`INSERT INTO event_cursors (subscriber, xid, event_id) SELECT 's', xid, id FROM events WHERE id = ` + strconv.FormatInt(old[0], 10),
		`INSERT INTO event_dead_letters (subscriber, event_id, attempts, last_error, parked_at) VALUES ('parked', ` + strconv.FormatInt(old[1], 10) + `, 5, 'boom', now())`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	if err := store.MigrateTo(ctx, pool, 13); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, "SELECT id, aggregate_id FROM events ORDER BY xid, id")
	if err != nil {
		t.Fatal(err)
	}
	type ev struct {
		ID  int64
		Agg string
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ev])
	if err != nil {
		t.Fatal(err)
	}
	if want := []ev{{old[0], "a"}, {old[1], "b"}, {old[2], "c"}}; !slices.Equal(got, want) {
		t.Fatalf("events after the upgrade = %v, want %v", got, want)
	}

	var newIDs []int64
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		newIDs, err = eventbus.Publish(ctx, tx, eventbus.New("job", "d", &hodeiv1.JobCreated{JobId: "d"}), eventbus.New("job", "e", &hodeiv1.JobCreated{JobId: "e"}))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if newIDs[0] <= old[2] || newIDs[1] != newIDs[0]+1 {
		t.Fatalf("new event ids %v, want consecutive ids above %d", newIDs, old[2])
	}

	bus := eventbus.NewBus(pool, eventbus.Config{Logger: slog.New(slog.DiscardHandler), SafetyPoll: -1})
	handled := make(chan string, 16)
	bus.Subscribe(eventbus.SubscriberConfig{Name: "s", BatchSize: 1}, func(_ context.Context, e eventbus.Event) error {
		handled <- e.AggregateID
		return nil
	})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- bus.Run(runCtx) }()
	defer func() {
		cancel()
		<-done
	}()
	want := []string{"b", "c", "d", "e"}
	if seen := receive(t, handled, len(want)); !slices.Equal(seen, want) {
		t.Fatalf("subscriber s after the upgrade handled %v, want %v", seen, want)
	}

	dls, err := bus.ListDeadLetters(ctx, "parked", 0)
	if err != nil || len(dls) != 1 || dls[0].Event.ID != old[1] || dls[0].Event.AggregateID != "b" || dls[0].Event.Type != "JobCreated" {
		t.Fatalf("dead letters after the upgrade = %+v, %v; want event %d of job b", dls, err, old[1])
	}
}

// receive takes n values from c, failing the test if they take over 10 s.
func receive(t *testing.T, c <-chan string, n int) []string {
	t.Helper()
	var seen []string
	timeout := time.After(10 * time.Second)
	for len(seen) < n {
		select {
		case v := <-c:
			seen = append(seen, v)
		case <-timeout:
			t.Fatalf("received %v in 10 s, want %d values", seen, n)
		}
	}
	return seen
}
