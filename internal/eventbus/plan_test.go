package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store/db"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestEventReadsNeverScanTheLog: the bus's read walks the (xid, first_id) index
// even after a read while the events table was tiny (a prepared statement
// keeps a generic plan per connection; one made for a one-row table is a
// sequential scan and a sort).
func TestEventReadsNeverScanTheLog(t *testing.T) {
	ctx := context.Background()
	// One connection, preferring generic plans: the worst case.
	cfg, err := pgxpool.ParseConfig(storetest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	exec := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	const insert = `INSERT INTO event_batches (types, aggregate_kinds, aggregate_ids, correlation_ids, payloads)
		SELECT '{T,T}', '{job,job}', '{x,x}', '{"",""}', '{"\\\\x00","\\\\x00"}' FROM generate_series(1, %d)`
	exec(fmt.Sprintf(insert, 1))
	exec("ANALYZE event_batches")
	q := eventbus.BusQueries(pool)
	read := func() int {
		t.Helper()
		rows, err := q.ReadEvents(ctx, db.ReadEventsParams{AfterXid: "0", AfterID: 0, MaxRows: 10})
		if err != nil {
			t.Fatal(err)
		}
		return len(rows)
	}
	read() // the plan is made now, for a one-row table
	exec(fmt.Sprintf(insert, 5000))
	// counter reads a statistics counter of event_batches, fresh.
	counter := func(query string) int64 {
		t.Helper()
		exec("SELECT pg_stat_force_next_flush()")
		exec("SELECT pg_stat_clear_snapshot()")
		var n int64
		if err := pool.QueryRow(ctx, query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	seqScans := func() int64 {
		return counter("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'event_batches'")
	}
	before := seqScans()
	if n := read(); n != 10 {
		t.Fatalf("read %d rows, want 10", n)
	}
	if after := seqScans(); after != before {
		t.Fatalf("the read scanned the whole events table (%d sequential scans)", after-before)
	}
	// A read from "now" (a position after every event: a transaction id
	// with no events, the largest event id) walks no index either: it
	// touches a few index entries, not every row.
	tuplesRead := func() int64 {
		return counter("SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes WHERE relname = 'event_batches'")
	}
	var lastXID int64
	if err := pool.QueryRow(ctx, "SELECT max(xid)::text::bigint FROM event_batches").Scan(&lastXID); err != nil {
		t.Fatal(err)
	}
	beforeTuples := tuplesRead()
	rows, err := q.ReadEvents(ctx, db.ReadEventsParams{AfterXid: fmt.Sprint(lastXID + 1), AfterID: 1<<63 - 1, MaxRows: 10})
	if err != nil || len(rows) != 0 {
		t.Fatalf("read from now: %d rows, %v; want none", len(rows), err)
	}
	if n := tuplesRead() - beforeTuples; n > 100 {
		t.Fatalf("a read from now read %d index entries of event_batches", n)
	}
	// Single-row reads go the same way; an unknown event is pgx.ErrNoRows.
	if n, err := q.CountEventsAfter(ctx, db.CountEventsAfterParams{AfterXid: "0", AfterID: 0}); err != nil || n != 10002 {
		t.Fatalf("lag = %d, %v; want 10002", n, err)
	}
	if _, err := q.EventPosition(ctx, -1); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("position of an unknown event: err = %v, want pgx.ErrNoRows", err)
	}
}
