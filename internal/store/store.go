// Package store owns Hodei's PostgreSQL state: the schema (numbered
// migrations embedded in the binary), every runtime query (sqlc, in
// queries/*.sql, generated into store/db) and the transactions that change
// jobs, workers and logs together with the events that describe them.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store/db"
	"github.com/hodei-dev/hodei/internal/store/pgtx"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the handle on the database.
type Store struct {
	pool *pgxpool.Pool
	q    *db.Queries
	log  *slog.Logger
	now  func() time.Time

	logCap       int64
	createHook   createHook
	attemptEnded func(AttemptEnd) // OnAttemptEnd
	staleReports atomic.Int64
	ids          jobIDs
}

// Config configures Open.
type Config struct {
	URL      string
	MaxConns int32            // default 20
	Logger   *slog.Logger     // nil = discard
	Now      func() time.Time // clock; default time.Now
	// LogCapBytes caps the log output stored per job; past it a
	// truncation marker is stored and the rest is discarded. Default 1 GiB.
	LogCapBytes int64
}

// Open connects, applies pending migrations and returns the store.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	} else if pcfg.MaxConns < 20 {
		pcfg.MaxConns = 20
	}
	pcfg.AfterConnect = registerUUID
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	logCap := cfg.LogCapBytes
	if logCap <= 0 {
		logCap = 1 << 30
	}
	return &Store{pool: pool, q: db.New(pool), log: log, now: now, logCap: logCap}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.now() }

// InTx runs fn in a transaction, committing when it returns nil.
func (s *Store) InTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// inTxDeferred is InTx for the hot transactions (claims, reports), in as
// few round trips as the reads allow. BEGIN travels with the first
// statement; fn queues the writes whose results nobody reads on later, and
// they go with COMMIT in one pipelined batch. A transaction with one read
// is thus two round trips instead of four or more. Any error rolls back
// everything.
func (s *Store) inTxDeferred(ctx context.Context, fn func(tx db.DBTX, later db.DBTX) error) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection left inside a transaction (an error below) is not
	// returned to the pool's idle set: pgxpool closes it on release.
	defer c.Release()
	tx := &pipeTx{conn: c.Conn()}
	var d deferred
	if err := fn(tx, &d); err != nil {
		tx.rollback(ctx)
		return err
	}
	if d.b.Len() == 0 && !tx.begun {
		return nil
	}
	b := &pgx.Batch{}
	if !tx.begun {
		for _, q := range pgtx.Begin {
			b.Queue(q)
		}
	}
	for _, q := range d.b.QueuedQueries {
		b.Queue(q.SQL, q.Arguments...)
	}
	b.Queue("commit")
	br := c.Conn().SendBatch(ctx, b)
	for i := 0; i < b.Len(); i++ {
		if _, err := br.Exec(); err != nil {
			br.Close() //nolint:errcheck
			tx.begun = true
			tx.rollback(ctx)
			return fmt.Errorf("transaction write %d of %d: %w", i+1, b.Len(), err)
		}
	}
	return br.Close()
}

// pipeTx runs a transaction's statements on one connection and sends its
// BEGIN together with the first of them (pgtx).
type pipeTx struct {
	conn  *pgx.Conn
	begun bool
}

func (t *pipeTx) rollback(ctx context.Context) {
	if t.begun {
		t.conn.Exec(context.WithoutCancel(ctx), "rollback") //nolint:errcheck
	}
}

// first sends BEGIN and sql in one batch and returns the results
// positioned at sql's.
func (t *pipeTx) first(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	t.begun = true
	return pgtx.Send(ctx, t.conn, pgtx.Begin, sql, args)
}

func (t *pipeTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.begun {
		return t.conn.Exec(ctx, sql, args...)
	}
	br, err := t.first(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (t *pipeTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.begun {
		return t.conn.Query(ctx, sql, args...)
	}
	br, err := t.first(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	return pgtx.NewRows(br, nil)
}

func (t *pipeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return pgtx.Row(t.Query(ctx, sql, args...))
}

// deferred is a db.DBTX that queues statements instead of running them.
// Only statements without results may use it: a query fails at once.
type deferred struct{ b pgx.Batch }

var errDeferredRead = errors.New("store: a deferred statement cannot return rows")

func (d *deferred) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	d.b.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

func (d *deferred) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errDeferredRead
}

func (d *deferred) QueryRow(context.Context, string, ...any) pgx.Row {
	return pgtx.Row(nil, errDeferredRead)
}

// migrationLock is the advisory lock key that serialises migrations of
// concurrently starting servers.
const migrationLock = 0x686f64656931 // "hodei1"

// Migrate applies the embedded migrations that the database has not seen,
// each in its own transaction, recording them in schema_migrations.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error { return migrateTo(ctx, pool, math.MaxInt) }

// migrateTo applies the migrations up to version last (tests: an upgrade
// from an older schema).
func migrateTo(ctx context.Context, pool *pgxpool.Pool, last int) error {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock) //nolint:errcheck
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// Every migration not applied yet runs, in order, also one numbered
	// below the latest applied: branches merged in another order than
	// their numbers leave such gaps.
	rows, err := conn.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[int(v)] = true
	}
	for _, f := range files {
		name := strings.TrimPrefix(f, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migrate: bad migration name %q", name)
		}
		if applied[v] || v > last {
			continue
		}
		sql, err := migrations.ReadFile(f)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s: %w", name, err)
		}
	}
	return nil
}

// IsNoRows reports whether err means "no such row".
func IsNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// ReadSnapshot runs fn with a store whose queries all read one snapshot
// (a read-only, repeatable-read transaction).
func (s *Store) ReadSnapshot(ctx context.Context, fn func(st *Store) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		snap := &Store{pool: s.pool, q: db.New(tx), log: s.log, now: s.now, logCap: s.logCap}
		return fn(snap)
	})
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// NewBus returns an event bus on the store's database: the events the
// store publishes in its transactions are the bus's.
func (s *Store) NewBus(cfg eventbus.Config) *eventbus.Bus { return eventbus.NewBus(s.pool, cfg) }

// LockSession takes the session-level advisory lock key on a connection
// of its own, out of the pool, and returns that connection; nil, without
// an error, when another session holds the lock. The lock lives as long
// as the connection: the caller closes it to give the lock up.
func (s *Store) LockSession(ctx context.Context, key int64) (*pgx.Conn, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// The lock belongs to the connection's PostgreSQL session: the
	// connection never goes back to the pool.
	c := conn.Hijack()
	var got bool
	if err := c.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil || !got {
		c.Close(context.WithoutCancel(ctx)) //nolint:errcheck
		return nil, err
	}
	return c, nil
}

// SQLForTests is the store's connection pool, for tests that read or
// alter the database behind the store's back (counting rows, breaking a
// constraint). Everything else goes through the store's methods.
func (s *Store) SQLForTests() *pgxpool.Pool { return s.pool }
