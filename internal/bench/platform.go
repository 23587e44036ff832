package bench

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-dev/hodei/internal/agent"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/platform"
	"github.com/hodei-dev/hodei/internal/store"
)

// benchLogger is the platform's logger in a bench: discarded, or warnings
// and errors to stderr with HODEI_BENCH_LOG=1 (to see why a run stalled).
func benchLogger() *slog.Logger {
	if os.Getenv("HODEI_BENCH_LOG") == "" {
		return platform.NewLogger(io.Discard)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// benchDatabase starts an embedded PostgreSQL with default settings and
// returns the URL of a migrated database on it; with pgStats it loads
// pg_stat_statements, for the diagnostics of Throughput's PGStats.
func benchDatabase(ctx context.Context, pgStats bool) (string, func(), error) {
	cfg := pgembed.Config{Logger: platform.NewLogger(io.Discard)}
	if pgStats {
		cfg.Settings = map[string]string{"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all", "pg_stat_statements.track_planning": "on"}
	}
	// HODEI_BENCH_PG_SETTINGS="k=v;k=v" adds server settings, for
	// diagnostics (auto_explain, logging); results with it are not comparable.
	for _, kv := range strings.Split(os.Getenv("HODEI_BENCH_PG_SETTINGS"), ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			if cfg.Settings == nil {
				cfg.Settings = map[string]string{}
			}
			cfg.Settings[strings.TrimSpace(k)] = v
		}
	}
	c, err := pgembed.Start(ctx, cfg)
	if err != nil {
		return "", nil, err
	}
	stop := func() { c.Stop(context.Background()) } //nolint:errcheck
	if err := c.CreateDatabase(ctx, "bench"); err != nil {
		stop()
		return "", nil, err
	}
	url := c.URL("bench")
	st, err := store.Open(ctx, store.Config{URL: url})
	if err != nil {
		stop()
		return "", nil, err
	}
	if pgStats {
		if err := execSQL(ctx, url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
			st.Close()
			stop()
			return "", nil, err
		}
	}
	st.Close()
	return url, stop, nil
}

// execSQL runs one statement on the database at url, on a connection of
// its own: the benchmarks' set-up, outside the store.
func execSQL(ctx context.Context, url, sql string) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	_, err = c.Exec(ctx, sql)
	return err
}

// startPlatform runs a quiet platform on a free loopback port until stop
// is called; hc is an API client with an admin token of it.
func startPlatform(ctx context.Context, pc platform.Config) (addr string, hc *http.Client, stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	readyc := make(chan string, 1)
	errc := make(chan error, 1)
	pc.Listen, pc.AgentLog = "127.0.0.1:0", io.Discard
	pc.Ready = func(a string) { readyc <- a }
	var secret string
	pc.Prepare = func(ctx context.Context, st *store.Store) error {
		_, secret, err = st.CreateToken(ctx, "bench-"+strconv.FormatInt(time.Now().UnixNano(), 36), []string{string(auth.Admin)}, 0)
		return err
	}
	go func() { errc <- platform.Run(ctx, benchLogger(), pc) }()
	select {
	case addr = <-readyc:
		return addr, auth.WithBearer(agent.HTTPClient(), secret), func() { cancel(); <-errc }, nil
	case err := <-errc:
		cancel()
		return "", nil, nil, err
	}
}

// startBench starts a database (benchDatabase) and a platform on it
// (startPlatform); stop stops both.
func startBench(ctx context.Context, pgStats bool, pc platform.Config) (url, addr string, hc *http.Client, stop func(), err error) {
	url, stopDB, err := benchDatabase(ctx, pgStats)
	if err != nil {
		return "", "", nil, nil, err
	}
	pc.DatabaseURL = url
	addr, hc, stopPlatform, err := startPlatform(ctx, pc)
	if err != nil {
		stopDB()
		return "", "", nil, nil, err
	}
	return url, addr, hc, func() { stopPlatform(); stopDB() }, nil
}

// hodeiBinary is binary, or else this executable: the hodei binary that
// benches run as workers and jobs.
func hodeiBinary(binary string) (string, error) {
	if binary != "" {
		return binary, nil
	}
	return os.Executable()
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
