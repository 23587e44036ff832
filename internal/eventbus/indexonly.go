package eventbus

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-dev/hodei/internal/store/db"
)

// indexOnly runs the bus's own queries so that their plans never scan the
// events table. As plain prepared statements their generic plans are
// cached per connection, and one made while the table was tiny (a
// sequential scan and a sort) stayed in use as the table grew, until
// autovacuum next analyzed it (233 ms per read at 200,000 events, seen).
// Reads therefore run in a read-only transaction with sequential scans
// off, sent with the statement in one round trip: every plan of theirs,
// cached or not, is made with the setting; in isolation such a read takes
// as long as the bare prepared statement. (Planning each read afresh
// instead cost about 0.1 ms of server CPU per read.) The rare writes
// (pruning, dead letters) are planned at each execution.
type indexOnly struct{ pool *pgxpool.Pool }

var _ db.DBTX = indexOnly{}

func (p indexOnly) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return p.pool.Exec(ctx, sql, append([]any{pgx.QueryExecModeCacheDescribe}, args...)...)
}

func (p indexOnly) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c, err := p.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	b.Queue("SET LOCAL enable_seqscan = off")
	b.Queue(sql, args...)
	b.Queue("COMMIT")
	br := c.SendBatch(ctx, b)
	fail := func(err error) (pgx.Rows, error) {
		_ = br.Close()
		// A connection left inside the transaction is closed on release.
		c.Release()
		return nil, err
	}
	for range 2 {
		if _, err := br.Exec(); err != nil {
			return fail(err)
		}
	}
	rows, err := br.Query()
	if err != nil {
		return fail(err)
	}
	return &txRows{Rows: rows, br: br, c: c}, nil
}

func (p indexOnly) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := p.Query(ctx, sql, args...)
	return oneRow{rows: rows, err: err}
}

// txRows are the rows of a read in indexOnly's transaction; Close ends
// the transaction and releases the connection.
type txRows struct {
	pgx.Rows
	br     pgx.BatchResults
	c      *pgxpool.Conn
	closed bool
	err    error
}

func (r *txRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	if r.Rows.Err() == nil {
		_, r.err = r.br.Exec() // COMMIT
	}
	if err := r.br.Close(); r.err == nil {
		r.err = err
	}
	r.c.Release()
}

func (r *txRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// oneRow is pgx.Row over txRows: the first row, or pgx.ErrNoRows.
type oneRow struct {
	rows pgx.Rows
	err  error
}

func (r oneRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
