// Package pgtx sends a transaction's opening statements with its first
// query, in one round trip, for the store's hot transactions and the event
// bus's reads alike.
//
// Those transactions run without sequential scans. Their statements' plans
// are cached per connection (generic plans), often made while the tables
// are nearly empty and their statistics stale: a sequential scan chosen
// for a hundred rows is still used at a hundred thousand. Every statement
// sent this way has an index to use, and a plan made with sequential scans
// off stays right as the tables grow. (Planning every execution instead,
// or turning sequential scans off for the whole pool, cost more; see
// docs/performance.md.)
package pgtx

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Begin opens a transaction without sequential scans; BeginReadOnly one
// that only reads.
var (
	Begin         = []string{"begin", "set local enable_seqscan = off"}
	BeginReadOnly = []string{"begin read only", "set local enable_seqscan = off"}
)

// Send sends the statements before, sql and the statements after in one
// batch, reads the results of before, and returns the batch positioned at
// sql's result. On error the batch is closed.
func Send(ctx context.Context, conn *pgx.Conn, before []string, sql string, args []any, after ...string) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	for _, s := range before {
		b.Queue(s)
	}
	b.Queue(sql, args...)
	for _, s := range after {
		b.Queue(s)
	}
	br := conn.SendBatch(ctx, b)
	for range before {
		if _, err := br.Exec(); err != nil {
			br.Close() //nolint:errcheck
			return nil, err
		}
	}
	return br, nil
}

// Rows are the rows of a statement sent with Send: Close also reads the
// rest of the batch, then calls done (if set). Close may be called again.
type Rows struct {
	pgx.Rows
	br     pgx.BatchResults
	done   func()
	closed bool
	err    error
}

// NewRows takes the rows of br's current statement.
func NewRows(br pgx.BatchResults, done func()) (*Rows, error) {
	rows, err := br.Query()
	if err != nil {
		br.Close() //nolint:errcheck
		if done != nil {
			done()
		}
		return nil, err
	}
	return &Rows{Rows: rows, br: br, done: done}, nil
}

func (r *Rows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	r.err = r.br.Close()
	if r.done != nil {
		r.done()
	}
}

// Err is the rows' error, or else that of the statements after them.
func (r *Rows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// Row is pgx.Row over a query's rows: the first row, or pgx.ErrNoRows.
func Row(rows pgx.Rows, err error) pgx.Row { return row{rows, err} }

type row struct {
	rows pgx.Rows
	err  error
}

func (r row) Scan(dest ...any) error {
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
