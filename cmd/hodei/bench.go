package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/agent"
	"github.com/hodei-dev/hodei/internal/bench"
	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/platform"
	"github.com/hodei-dev/hodei/internal/store"
)

const benchUsage = "usage: hodei bench startup|events|dispatch|throughput|logs|provision [flags]"

func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(benchUsage)
	}
	switch args[0] {
	case "startup":
		return benchStartup(ctx, args[1:])
	case "events":
		return benchEvents(ctx, args[1:])
	case "dispatch":
		return benchDispatch(ctx, args[1:])
	case "throughput":
		return benchThroughput(ctx, args[1:])
	case "logs":
		return benchLogs(ctx, args[1:])
	case "provision":
		return benchProvision(ctx, args[1:])
	case "emit": // the load generator that bench logs runs as a job
		return benchEmit(args[1:])
	}
	return fmt.Errorf("unknown benchmark %q; %s", args[0], benchUsage)
}

// benchStartup measures, per run: embedded PostgreSQL start (initdb
// included) until the server is ready to serve, and then a `true` job
// from SubmitJob's call until the job is final (a worker process is
// provisioned for it, since none exists yet). Durability settings are
// PostgreSQL's defaults (fsync on).
func benchStartup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench startup", flag.ContinueOnError)
	runs := fs.Int("runs", 3, "repetitions; the median is reported")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ready, first []time.Duration
	for i := 0; i < *runs; i++ {
		r, f, err := startupOnce(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("run %d: ready=%s first_job=%s\n", i+1, r.Round(time.Millisecond), f.Round(time.Millisecond))
		ready, first = append(ready, r), append(first, f)
	}
	fmt.Printf("result name=startup ready_ms=%.0f first_job_ms=%.1f runs=%d\n", ms(median(ready)), ms(median(first)), *runs)
	return nil
}

func startupOnce(ctx context.Context) (ready, firstJob time.Duration, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := platform.NewLogger(io.Discard)
	start := time.Now()
	c, err := pgembed.Start(ctx, pgembed.Config{Logger: log})
	if err != nil {
		return 0, 0, err
	}
	defer c.Stop(context.Background()) //nolint:errcheck
	if err := c.CreateDatabase(ctx, "hodei"); err != nil {
		return 0, 0, err
	}
	readyc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- platform.Run(ctx, log, platform.Config{Listen: "127.0.0.1:0", DatabaseURL: c.URL("hodei"), MaxWorkers: 1, AgentLog: io.Discard,
			Ready: func(addr string) { readyc <- addr }})
	}()
	var addr string
	select {
	case addr = <-readyc:
	case err := <-errc:
		return 0, 0, fmt.Errorf("server: %w", err)
	}
	ready = time.Since(start)
	jobs := hodeiv1connect.NewJobServiceClient(agent.HTTPClient(), "http://"+addr, connect.WithGRPC())
	t0 := time.Now()
	resp, err := jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: &hodeiv1.JobSpec{Command: []string{"true"}}}))
	if err != nil {
		return 0, 0, err
	}
	w, err := jobs.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: resp.Msg.Job.Id}))
	if err != nil {
		return 0, 0, err
	}
	for w.Receive() {
		if st := w.Msg().Job.State; st == hodeiv1.JobState_JOB_STATE_SUCCEEDED {
			firstJob = time.Since(t0)
			break
		} else if st >= hodeiv1.JobState_JOB_STATE_FAILED && st <= hodeiv1.JobState_JOB_STATE_TIMED_OUT {
			return 0, 0, fmt.Errorf("first job ended %s", st)
		}
	}
	w.Close()
	if firstJob == 0 {
		return 0, 0, fmt.Errorf("watch ended: %v", w.Err())
	}
	cancel()
	<-errc
	return ready, firstJob, nil
}

// benchEvents runs the event bus benchmark on a fresh embedded
// PostgreSQL with its default durability (fsync on).
func benchEvents(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench events", flag.ContinueOnError)
	var cfg bench.EventsConfig
	fs.IntVar(&cfg.Total, "total", 100_000, "events of the throughput phase")
	fs.IntVar(&cfg.Publishers, "publishers", 4, "concurrent publishers")
	fs.IntVar(&cfg.BatchPerTx, "batch", 50, "events per transaction in the throughput phase")
	fs.IntVar(&cfg.Rate, "rate", 1000, "events per second of the latency phase (one per transaction)")
	fs.DurationVar(&cfg.RateDuration, "duration", 5*time.Second, "length of the latency phase")
	if err := fs.Parse(args); err != nil {
		return err
	}
	url, stop, err := benchDatabase(ctx)
	if err != nil {
		return err
	}
	defer stop()
	cfg.URL = url
	res, err := bench.Events(ctx, cfg, platform.NewLogger(io.Discard))
	if err != nil {
		return err
	}
	fmt.Println(res.Line())
	return nil
}

// benchLogger is the platform's logger in a bench: discarded, or warnings
// and errors to stderr with HODEI_BENCH_LOG=1 (to see why a run stalled).
func benchLogger() *slog.Logger {
	if os.Getenv("HODEI_BENCH_LOG") == "" {
		return platform.NewLogger(io.Discard)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// benchDatabase starts an embedded PostgreSQL with default settings and
// returns the URL of a migrated database on it.
func benchDatabase(ctx context.Context) (string, func(), error) {
	cfg := pgembed.Config{Logger: platform.NewLogger(io.Discard)}
	if benchPGStats {
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
	if benchPGStats {
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

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchPGStats makes benchDatabase load pg_stat_statements, for the
// diagnostics that `bench throughput --pgstats` prints.
var benchPGStats bool

func splitComma(s string) []string { return strings.Split(s, ",") }

// startPlatform runs a quiet platform on a free loopback port until stop
// is called (benchmarks).
func startPlatform(ctx context.Context, pc platform.Config) (addr string, stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	readyc := make(chan string, 1)
	errc := make(chan error, 1)
	pc.Listen, pc.AgentLog = "127.0.0.1:0", io.Discard
	pc.Ready = func(a string) { readyc <- a }
	go func() { errc <- platform.Run(ctx, benchLogger(), pc) }()
	select {
	case addr = <-readyc:
		return addr, func() { cancel(); <-errc }, nil
	case err := <-errc:
		cancel()
		return "", nil, err
	}
}
