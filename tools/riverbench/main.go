// Command riverbench measures the no-op job throughput of River
// (github.com/riverqueue/river) on this machine, on a private embedded
// PostgreSQL with default durability (fsync on), the way `river bench
// --num-total-jobs N` does, so that Hodei's `bench throughput` mode=noop can
// be compared with it on the same machine in the same minute.
//
// Each round, like River's benchmarker in its fixed-total-jobs mode:
// truncates and VACUUM FULLs river_job; inserts every job with
// Client.InsertMany in batches of 5,000 before the client starts (not timed);
// starts a client with FetchCooldown 2ms, FetchPollInterval 20ms and the
// default queue's MaxWorkers at 2,000; and counts finished jobs through a
// client subscription (completed, cancelled and failed events), the rate
// being the jobs over the time from Client.Start's return to the last event.
// The client is then stopped.
//
// With --duration D it runs River's default shape instead (`river bench
// --duration D`, its continuous mode): every 250 ms an inserter tops the
// backlog up in batches of 5,000 until at least 75,000 jobs wait; the client
// starts once the first top-up is in, and the rate is the jobs worked over
// the time from Client.Start's return to the last finished job before D
// ended. The insert runs while jobs are worked, in the same process, as in
// river bench, so its CPU is in the figure. It prints
//
//	result name=river mode=noop-continuous jobs_per_sec=N jobs_per_sec_min=N jobs_per_sec_max=N rounds=N duration=D workers=N
//
// In the fixed-total mode it prints one line per round and a final
//
//	result name=river mode=noop jobs_per_sec=N jobs_per_sec_min=N jobs_per_sec_max=N with_insert_jobs_per_sec=N rounds=N jobs=N workers=N
//
// line (the median round, and the range over all rounds; with_insert counts
// the insert's time too, the median over rounds); CPU use per job of this
// process and of PostgreSQL goes to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/hodei-dev/hodei/internal/bench/cpu"
	"github.com/hodei-dev/hodei/internal/pgembed"
)

// Settings of `river bench` (cmd/river/riverbench/river_bench.go).
const (
	insertBatchSize   = 5_000 // jobs per InsertMany
	defaultMaxWorkers = 2_000 // MaxWorkers of the default queue
	fetchCooldown     = 2 * time.Millisecond
	fetchPollInterval = 20 * time.Millisecond
	subscribeChanSize = 75_000 // river bench's minJobs, used as the subscription buffer
	minJobs           = 75_000 // river bench's continuous mode keeps at least this many jobs inserted and not yet worked
	topUpInterval     = 250 * time.Millisecond
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "riverbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("riverbench", flag.ContinueOnError)
	jobs := fs.Int("jobs", 20_000, "jobs inserted before each round's client starts and worked down")
	rounds := fs.Int("rounds", 1, "rounds; the result line is the median round's, with the range over all")
	workers := fs.Int("workers", defaultMaxWorkers, "MaxWorkers of the default queue (river bench: 2000)")
	duration := fs.Duration("duration", 0, "run river bench's continuous mode (insert while working) for this long instead of working down --jobs")
	verbose := fs.Bool("v", false, "River's and PostgreSQL's log at info level to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *duration < 0 {
		return errors.New("--duration must not be negative")
	}
	if *jobs < 1 || *rounds < 1 || *workers < 1 || *workers > river.QueueNumWorkersMax {
		return fmt.Errorf("--jobs and --rounds must be at least 1 and --workers within 1..%d", river.QueueNumWorkersMax)
	}
	logLevel := slog.LevelWarn
	if *verbose {
		logLevel = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))

	// Durable defaults (fsync on), as `hodei bench` runs its benchmarks.
	pgLog := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *verbose {
		pgLog = logger
	}
	cluster, err := pgembed.Start(ctx, pgembed.Config{Logger: pgLog})
	if err != nil {
		return err
	}
	defer cluster.Stop(context.Background()) //nolint:errcheck
	if err := cluster.CreateDatabase(ctx, "riverbench"); err != nil {
		return err
	}
	pool, err := openPool(ctx, cluster.URL("riverbench"))
	if err != nil {
		return err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Logger: logger})
	if err != nil {
		return err
	}
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	var pgVersion, fsync, syncCommit string
	if err := pool.QueryRow(ctx, "SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')").
		Scan(&pgVersion, &fsync, &syncCommit); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "river %s (%d migrations applied), PostgreSQL %s (fsync=%s synchronous_commit=%s), pool max_conns=%d, %d cores, GOMAXPROCS %d\n",
		riverVersion(), len(res.Versions), pgVersion, fsync, syncCommit, pool.Config().MaxConns, runtime.NumCPU(), runtime.GOMAXPROCS(0))

	rates := make([]float64, 0, *rounds)
	if *duration > 0 {
		for i := range *rounds {
			r, err := continuousOnce(ctx, pool, driver, logger, *duration, *workers)
			if err != nil {
				return fmt.Errorf("round %d: %w", i+1, err)
			}
			fmt.Printf("round %d: jobs_per_sec=%.0f worked=%d inserted=%d elapsed=%s start_call=%s\n",
				i+1, r.rate, r.worked, r.inserted, r.elapsed.Round(time.Millisecond), r.startCall.Round(time.Millisecond))
			printCPU(os.Stderr, r.cpu, i+1, r.cpuWall, int(r.worked), "Client.Start to the end, inserts included")
			rates = append(rates, r.rate)
		}
		slices.Sort(rates)
		fmt.Printf("result name=river mode=noop-continuous jobs_per_sec=%.0f jobs_per_sec_min=%.0f jobs_per_sec_max=%.0f rounds=%d duration=%s workers=%d\n",
			rates[len(rates)/2], rates[0], rates[len(rates)-1], *rounds, *duration, *workers)
		return nil
	}
	var withInsert []float64
	for i := range *rounds {
		r, err := roundOnce(ctx, pool, driver, logger, *jobs, *workers)
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		fmt.Printf("round %d: jobs_per_sec=%.0f worked=%d elapsed=%s start_call=%s insert=%s\n",
			i+1, r.rate, r.worked, r.elapsed.Round(time.Millisecond), r.startCall.Round(time.Millisecond), r.insert.Round(time.Millisecond))
		printCPU(os.Stderr, r.cpu, i+1, r.cpuWall, *jobs, "Client.Start to the last job")
		rates = append(rates, r.rate)
		withInsert = append(withInsert, float64(r.worked)/(r.insert+r.elapsed).Seconds())
	}
	slices.Sort(rates)
	slices.Sort(withInsert)
	// with_insert_jobs_per_sec counts the insert's time too, as hodei's
	// bench throughput does (its clock starts before the first submission).
	fmt.Printf("result name=river mode=noop jobs_per_sec=%.0f jobs_per_sec_min=%.0f jobs_per_sec_max=%.0f with_insert_jobs_per_sec=%.0f rounds=%d jobs=%d workers=%d\n",
		rates[len(rates)/2], rates[0], rates[len(rates)-1], withInsert[len(withInsert)/2], *rounds, *jobs, *workers)
	return nil
}

// riverVersion is the version of River this binary was built with.
func riverVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/riverqueue/river" {
				return m.Version
			}
		}
	}
	return "(unknown version)"
}

// openPool opens a pool the way the river CLI does: pgxpool's defaults
// (MaxConns max(4, NumCPU)) plus its session settings.
func openPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	params := cfg.ConnConfig.RuntimeParams
	params["application_name"] = "riverbench"
	params["idle_in_transaction_session_timeout"] = strconv.Itoa(11_000)
	params["statement_timeout"] = strconv.Itoa(10_000)
	return pgxpool.NewWithConfig(ctx, cfg)
}

type roundResult struct {
	rate      float64
	worked    int64
	inserted  int64         // continuous mode
	elapsed   time.Duration // Start's return to the last finished-job event (river bench's period)
	startCall time.Duration // how long Client.Start took (not in elapsed)
	insert    time.Duration
	cpu       cpu.Use       // used from just before Client.Start until every job finished (continuous: until the client stopped)
	cpuWall   time.Duration // the wall time of that window
}

// noopArgs is river bench's BenchmarkArgs.
type noopArgs struct {
	Num int `json:"num"`
}

func (noopArgs) Kind() string { return "benchmark" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
}

func (noopWorker) Work(context.Context, *river.Job[noopArgs]) error { return nil }

// freshClient empties river_job as river bench's resetJobsTable does and
// returns a client with river bench's settings, not started, subscribed to
// the events of finished jobs (cancel ends the subscription).
func freshClient(ctx context.Context, pool *pgxpool.Pool, driver *riverpgxv5.Driver, logger *slog.Logger, maxWorkers, chanSize int) (
	client *river.Client[pgx.Tx], events <-chan *river.Event, cancel func(), err error) {
	for _, q := range []string{"TRUNCATE river_job", "VACUUM FULL river_job"} {
		if _, err := pool.Exec(ctx, q); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{})
	client, err = river.NewClient(driver, &river.Config{
		FetchCooldown:     fetchCooldown,
		FetchPollInterval: fetchPollInterval,
		Logger:            logger,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: maxWorkers}},
		Workers:           workers,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	events, cancel = client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: chanSize,
		Kinds:    []river.EventKind{river.EventKindJobCancelled, river.EventKindJobCompleted, river.EventKindJobFailed},
	})
	return client, events, cancel, nil
}

func roundOnce(ctx context.Context, pool *pgxpool.Pool, driver *riverpgxv5.Driver, logger *slog.Logger, jobs, maxWorkers int) (roundResult, error) {
	var r roundResult
	client, events, cancelSub, err := freshClient(ctx, pool, driver, logger, maxWorkers, max(subscribeChanSize, jobs))
	if err != nil {
		return r, err
	}
	defer cancelSub()
	var t tally
	allDone := make(chan struct{})
	go t.run(events, func(worked int64) {
		if worked == int64(jobs) {
			close(allDone)
		}
	})

	// Insert every job before the client starts, as river bench -n does.
	t0 := time.Now()
	batch := make([]river.InsertManyParams, 0, insertBatchSize)
	for n := 0; n < jobs; {
		batch = batch[:0]
		for ; n < jobs && len(batch) < insertBatchSize; n++ {
			batch = append(batch, river.InsertManyParams{Args: noopArgs{Num: n + 1}})
		}
		if _, err := client.InsertMany(ctx, batch); err != nil {
			return r, fmt.Errorf("insert: %w", err)
		}
	}
	r.insert = time.Since(t0)

	cpu0 := cpu.Now()
	beforeStart := time.Now()
	if err := client.Start(ctx); err != nil {
		return r, err
	}
	start := time.Now() // river bench starts its clock after Start returns
	r.startCall = start.Sub(beforeStart)

	stopClient := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return client.Stop(sctx)
	}
	timeout := time.NewTimer(10 * time.Minute)
	defer timeout.Stop()
	select {
	case <-allDone:
	case <-ctx.Done():
		_ = stopClient()
		return r, ctx.Err()
	case <-timeout.C:
		_ = stopClient()
		return r, fmt.Errorf("only %d of %d jobs finished in 10 minutes", t.worked.Load(), jobs)
	}
	r.cpu, r.cpuWall = cpu.Now().Sub(cpu0), time.Since(beforeStart)
	if err := stopClient(); err != nil {
		return r, fmt.Errorf("stop client: %w", err)
	}
	if n := t.unwanted.Load(); n > 0 {
		return r, fmt.Errorf("%d jobs were cancelled or discarded", n)
	}
	// Cross-check the event count with the table.
	var completed int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE state = 'completed'").Scan(&completed); err != nil {
		return r, err
	}
	if completed != jobs {
		return r, fmt.Errorf("%d of %d jobs completed in river_job", completed, jobs)
	}
	r.worked = t.worked.Load()
	r.elapsed = time.Unix(0, t.lastAt.Load()).Sub(start)
	if r.elapsed <= 0 {
		return r, errors.New("all jobs finished before Client.Start returned")
	}
	r.rate = float64(r.worked) / r.elapsed.Seconds()
	return r, nil
}

// printCPU writes the CPU used over wall, in all and per job.
func printCPU(w io.Writer, d cpu.Use, round int, wall time.Duration, jobs int, window string) {
	perJob := func(t time.Duration) float64 { return float64(t.Microseconds()) / float64(jobs) }
	cores := runtime.NumCPU()
	fmt.Fprintf(w, "round %d cpu over %.2fs (%s; %d cores = %.2fs): riverbench (River client) %.2fs = %.0f µs/job, postgres %.2fs = %.0f µs/job, total %.0f µs/job\n",
		round, wall.Seconds(), window, cores, float64(cores)*wall.Seconds(),
		d.Self.Seconds(), perJob(d.Self), d.Postgres.Seconds(), perJob(d.Postgres), perJob(d.Self+d.Postgres))
}

// continuousOnce runs river bench's default, continuous mode for d: jobs are
// inserted while the client works them, the backlog topped up to minJobs.
func continuousOnce(ctx context.Context, pool *pgxpool.Pool, driver *riverpgxv5.Driver, logger *slog.Logger, d time.Duration, maxWorkers int) (roundResult, error) {
	var r roundResult
	client, events, cancelSub, err := freshClient(ctx, pool, driver, logger, maxWorkers, subscribeChanSize)
	if err != nil {
		return r, err
	}
	defer cancelSub()
	var t tally
	var inserted atomic.Int64
	go t.run(events, func(int64) {})

	insCtx, stopInserter := context.WithCancel(ctx)
	defer stopInserter()
	ready := make(chan struct{})
	insErr := make(chan error, 1)
	go func() { insErr <- topUp(insCtx, client, ready, &inserted, &t.worked) }()
	select {
	case <-ready:
	case err := <-insErr:
		return r, fmt.Errorf("insert: %w", err)
	case <-ctx.Done():
		return r, ctx.Err()
	}

	cpu0 := cpu.Now()
	beforeStart := time.Now()
	if err := client.Start(ctx); err != nil {
		return r, err
	}
	start := time.Now()
	r.startCall = start.Sub(beforeStart)
	select {
	case <-time.After(d):
	case err := <-insErr:
		stopInserter()
		_ = client.Stop(context.WithoutCancel(ctx))
		return r, fmt.Errorf("insert: %w", err)
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.worked = t.worked.Load()
	r.elapsed = time.Unix(0, t.lastAt.Load()).Sub(start)
	r.cpu, r.cpuWall = cpu.Now().Sub(cpu0), time.Since(beforeStart)
	stopInserter()
	if err := <-insErr; err != nil {
		return r, fmt.Errorf("insert: %w", err)
	}
	r.inserted = inserted.Load()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.Stop(sctx); err != nil {
		return r, fmt.Errorf("stop client: %w", err)
	}
	if n := t.unwanted.Load(); n > 0 {
		return r, fmt.Errorf("%d jobs were cancelled or discarded", n)
	}
	if r.worked == 0 || r.elapsed <= 0 {
		return r, errors.New("no job finished")
	}
	r.rate = float64(r.worked) / r.elapsed.Seconds()
	return r, nil
}

// tally counts a client's finished jobs from its subscription, as river
// bench does.
type tally struct {
	worked   atomic.Int64
	unwanted atomic.Int64 // cancelled or discarded: never expected
	lastAt   atomic.Int64 // unix nanoseconds of the last finished job
}

// run reads events until the subscription ends, calling each with the
// number of jobs worked after every finished one. A failure that will be
// retried is counted when the job finishes.
func (t *tally) run(events <-chan *river.Event, each func(worked int64)) {
	for ev := range events {
		switch {
		case ev.Kind == river.EventKindJobCompleted:
		case ev.Kind == river.EventKindJobFailed && ev.Job.State != rivertype.JobStateDiscarded:
			continue
		default:
			t.unwanted.Add(1)
		}
		t.lastAt.Store(time.Now().UnixNano())
		each(t.worked.Add(1))
	}
}

// topUp is river bench's insertJobsContinuously: every 250 ms, insert
// batches of 5,000 until at least minJobs inserted jobs are not yet worked;
// ready closes after the first top-up. It returns nil once ctx ends.
func topUp(ctx context.Context, client *river.Client[pgx.Tx], ready chan struct{}, inserted, worked *atomic.Int64) error {
	batch := make([]river.InsertManyParams, insertBatchSize)
	n := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(topUpInterval):
		}
		for {
			for i := range batch {
				n++
				batch[i].Args = noopArgs{Num: n}
			}
			if _, err := client.InsertMany(ctx, batch); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if inserted.Add(int64(len(batch)))-worked.Load() >= minJobs {
				break
			}
		}
		if ready != nil {
			close(ready)
			ready = nil
		}
	}
}
