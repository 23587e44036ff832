package eventbus

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hodei-dev/hodei/internal/store/db"
)

// plannedEachTime runs the bus's own queries (log reads, lag counts,
// pruning) as unnamed statements, which PostgreSQL plans at every
// execution for the table as it is then. A prepared statement, pgx's
// default, keeps a generic plan per connection: one made while the events
// table was tiny (a sequential scan and a sort) stayed in use as the table
// grew, until autovacuum next analyzed it (233 ms per read at 200,000
// events, seen). Planning a read costs a few tens of microseconds.
type plannedEachTime struct{ db db.DBTX }

func (p plannedEachTime) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return p.db.Exec(ctx, sql, append([]any{pgx.QueryExecModeCacheDescribe}, args...)...)
}

func (p plannedEachTime) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return p.db.Query(ctx, sql, append([]any{pgx.QueryExecModeCacheDescribe}, args...)...)
}

func (p plannedEachTime) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return p.db.QueryRow(ctx, sql, append([]any{pgx.QueryExecModeCacheDescribe}, args...)...)
}
