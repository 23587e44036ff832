package eventbus

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-dev/hodei/internal/store/db"
	"github.com/hodei-dev/hodei/internal/store/pgtx"
)

// indexOnly runs the bus's own queries so that their plans never scan the
// events table (see pgtx for why). Reads run in a read-only transaction
// with sequential scans off, sent with the statement and its COMMIT in one
// round trip; in isolation such a read takes as long as the bare prepared
// statement. The rare writes (pruning, dead letters) are planned at each
// execution instead.
type indexOnly struct{ pool *pgxpool.Pool }

var _ db.DBTX = indexOnly{}

func (p indexOnly) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return planEach(p).Exec(ctx, sql, args...)
}

// planEach runs statements planned at each execution (pruning: a write
// that reads rows back).
type planEach struct{ pool *pgxpool.Pool }

var _ db.DBTX = planEach{}

func (p planEach) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return p.pool.Exec(ctx, sql, append([]any{pgx.QueryExecModeCacheDescribe}, args...)...)
}

func (p planEach) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return p.pool.Query(ctx, sql, append([]any{pgx.QueryExecModeCacheDescribe}, args...)...)
}

func (p planEach) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return p.pool.QueryRow(ctx, sql, append([]any{pgx.QueryExecModeCacheDescribe}, args...)...)
}

func (p indexOnly) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c, err := p.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// A connection left inside the transaction (an error) is closed on
	// release.
	br, err := pgtx.Send(ctx, c.Conn(), pgtx.BeginReadOnly, sql, args, "commit")
	if err != nil {
		c.Release()
		return nil, err
	}
	return pgtx.NewRows(br, c.Release)
}

func (p indexOnly) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return pgtx.Row(p.Query(ctx, sql, args...))
}
