package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/agent"
	"github.com/hodei-dev/hodei/internal/bench/cpu"
	"github.com/hodei-dev/hodei/internal/platform"
	"github.com/hodei-dev/hodei/internal/store"
)

// benchRig is a server on an embedded PostgreSQL (default durability)
// with in-process agents, for the dispatch benchmarks.
type benchRig struct {
	addr   string
	store  *store.Store
	db     *pgxpool.Pool // what the benchmark reads in the database itself
	jobs   hodeiv1connect.JobServiceClient
	agents []*agent.Agent
	run    func(*agent.Agent) // starts an agent
	stop   func()
}

// newBenchRig starts the platform and its agents and waits until every
// agent is connected; with hold, the agents are registered but not
// started (startAgents starts them).
func newBenchRig(ctx context.Context, agents, slots int, prefetch prefetchFlag, noop, hold bool, onRun func(string)) (*benchRig, error) {
	url, stopDB, err := benchDatabase(ctx)
	if err != nil {
		return nil, err
	}
	log := platform.NewLogger(io.Discard)
	addr, stopPlatform, err := startPlatform(ctx, platform.Config{DatabaseURL: url})
	if err != nil {
		stopDB()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &benchRig{addr: addr}
	var g errgroup.Group
	r.run = func(a *agent.Agent) { g.Go(func() error { return a.Run(ctx) }) }
	r.stop = func() {
		cancel()
		g.Wait() //nolint:errcheck
		stopPlatform()
		if r.store != nil {
			r.store.Close()
		}
		if r.db != nil {
			r.db.Close()
		}
		stopDB()
	}
	if r.store, err = store.Open(ctx, store.Config{URL: url}); err != nil {
		r.stop()
		return nil, err
	}
	if r.db, err = pgxpool.New(ctx, url); err != nil {
		r.stop()
		return nil, err
	}
	for i := 0; i < agents; i++ {
		_, token, err := r.store.NewWorker(ctx, "bench", "", nil, time.Minute)
		if err != nil {
			r.stop()
			return nil, err
		}
		a, err := agent.New(agent.Config{Servers: []string{r.addr}, BootstrapToken: token, Slots: slots, Prefetch: prefetch.n, AdaptivePrefetch: prefetch.adaptive, NoopExec: noop, OnRunJob: onRun, Logger: log})
		if err != nil {
			r.stop()
			return nil, err
		}
		r.agents = append(r.agents, a)
	}
	r.jobs = hodeiv1connect.NewJobServiceClient(agent.HTTPClient(), "http://"+r.addr, connect.WithGRPC())
	if !hold {
		if err := r.startAgents(ctx); err != nil {
			r.stop()
			return nil, err
		}
	}
	return r, nil
}

// startAgents starts the rig's agents and waits until every one is
// connected.
func (r *benchRig) startAgents(ctx context.Context) error {
	for _, a := range r.agents {
		r.run(a)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ws, err := r.store.WorkerLoad(ctx)
		if err == nil && len(ws) == len(r.agents) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agents did not connect (%d of %d)", len(ws), len(r.agents))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchDispatch measures dispatch latency: idle agents are connected, jobs
// are submitted one at a time at a steady rate, and the latency runs from
// SubmitJob's return to the agent receiving RunJob.
func benchDispatch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench dispatch", flag.ContinueOnError)
	n := fs.Int("jobs", 500, "jobs to submit")
	rate := fs.Int("rate", 100, "jobs per second")
	agents := fs.Int("agents", 4, "idle agents")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var mu sync.Mutex
	returned := map[string]time.Time{}
	received := map[string]time.Time{}
	onRun := func(id string) {
		now := time.Now()
		mu.Lock()
		received[id] = now
		mu.Unlock()
	}
	rig, err := newBenchRig(ctx, *agents, 4, prefetchFlag{}, true, false, onRun)
	if err != nil {
		return err
	}
	defer rig.stop()
	spec := &hodeiv1.JobSpec{Command: []string{"true"}}
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	for i := 0; i < *n; i++ {
		<-tick.C
		r, err := rig.jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
		if err != nil {
			return err
		}
		now := time.Now()
		mu.Lock()
		returned[r.Msg.Job.Id] = now
		mu.Unlock()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		done := len(received) >= *n
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	for id, t0 := range returned {
		if t1, ok := received[id]; ok {
			lat = append(lat, max(t1.Sub(t0), 0))
		}
	}
	if len(lat) < *n {
		return fmt.Errorf("only %d of %d jobs reached an agent", len(lat), *n)
	}
	slices.Sort(lat)
	fmt.Printf("result name=dispatch p50_ms=%.2f p99_ms=%.2f max_ms=%.2f jobs=%d rate=%d\n", ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]), ms(lat[len(lat)-1]), len(lat), *rate)
	return nil
}

// benchThroughput submits jobs in bulk to connected agents and measures
// jobs/s until all are final: with real `true` processes (mode=process,
// compared with this machine's raw fork/exec rate at the same
// concurrency, measured in the same run) and with the agents' no-op mode
// (mode=noop: benchmark only, the control plane alone).
func benchThroughput(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench throughput", flag.ContinueOnError)
	n := fs.Int("jobs", 5000, "jobs per mode")
	agents := fs.Int("agents", 4, "agents")
	slots := fs.Int("slots", 8, "slots per agent")
	prefetch := prefetchFlag{adaptive: true, n: autoPrefetch}
	fs.Var(&prefetch, "prefetch", "jobs each agent accepts beyond its slots, or auto (agent --prefetch, whose default is auto)")
	submitters := fs.Int("submitters", 8, "concurrent submitters")
	batch := fs.Int("batch", 1000, "jobs per SubmitJobs call (at most 1000, the API's limit; 1: SubmitJob one at a time)")
	modes := fs.String("modes", "process,noop", "modes to run")
	rounds := fs.Int("rounds", 1, "runs per mode; the result line is the median run's, with the range over all")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run here")
	memprofile := fs.String("memprofile", "", "write an allocation profile of the run here (at its end)")
	fs.BoolVar(&benchPGStats, "pgstats", false, "print to stderr the CPU used by this process, its job processes and PostgreSQL (in all and per job), and the costliest statements")
	presubmit := fs.Bool("presubmit", false, "submit every job before the agents start and time only their work, from the agents' start to the last job's end (the shape of river bench --num-total-jobs); default: submission is timed and runs while agents work")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *memprofile != "" {
		defer func() {
			if f, err := os.Create(*memprofile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if *rounds < 1 {
		return fmt.Errorf("bench throughput: rounds: %d is less than 1", *rounds)
	}
	for _, mode := range []string{"process", "noop"} {
		if !slices.Contains(splitComma(*modes), mode) {
			continue
		}
		// The machine's own fork/exec rate is measured before and after
		// every platform run, at the same concurrency, and a run is
		// compared with the mean of the two: this machine's speed drifts
		// by ±25 % within minutes.
		type run struct{ rate, fork float64 }
		var runs []run
		var forkBefore float64
		if mode == "process" {
			var err error
			if forkBefore, err = forkExecRate(ctx, *n/2, *agents**slots); err != nil {
				return err
			}
		}
		for range *rounds {
			rate, err := throughputOnce(ctx, mode == "noop", *n, *agents, *slots, prefetch, *submitters, *batch, *presubmit)
			if err != nil {
				return err
			}
			r := run{rate: rate}
			if mode == "process" {
				forkAfter, err := forkExecRate(ctx, *n/2, *agents**slots)
				if err != nil {
					return err
				}
				r.fork = (forkBefore + forkAfter) / 2
				forkBefore = forkAfter
			}
			runs = append(runs, r)
		}
		// Runs in order of their figure (ratio, or rate for noop); the
		// median one is reported.
		figure := func(r run) float64 {
			if mode == "process" {
				return r.rate / r.fork
			}
			return r.rate
		}
		slices.SortFunc(runs, func(a, b run) int { return cmp.Compare(figure(a), figure(b)) })
		med := runs[len(runs)/2]
		spread := ""
		if len(runs) > 1 {
			name := "jobs_per_sec"
			format := "%s_min=%.0f %s_max=%.0f rounds=%d "
			if mode == "process" {
				name, format = "ratio", "%s_min=%.2f %s_max=%.2f rounds=%d "
			}
			spread = fmt.Sprintf(format, name, figure(runs[0]), name, figure(runs[len(runs)-1]), len(runs))
		}
		if mode == "noop" {
			fmt.Printf("result name=throughput mode=noop jobs_per_sec=%.0f %sjobs=%d agents=%d slots=%d prefetch=%s batch=%d presubmit=%t\n", med.rate, spread, *n, *agents, *slots, &prefetch, *batch, *presubmit)
			continue
		}
		fmt.Printf("result name=throughput mode=process jobs_per_sec=%.0f fork_exec_per_sec=%.0f ratio=%.2f %sjobs=%d agents=%d slots=%d prefetch=%s batch=%d presubmit=%t\n", med.rate, med.fork, med.rate/med.fork, spread, *n, *agents, *slots, &prefetch, *batch, *presubmit)
	}
	return nil
}

func throughputOnce(ctx context.Context, noop bool, n, agents, slots int, prefetch prefetchFlag, submitters, batch int, presubmit bool) (float64, error) {
	rig, err := newBenchRig(ctx, agents, slots, prefetch, noop, presubmit, nil)
	if err != nil {
		return 0, err
	}
	defer rig.stop()
	spec := &hodeiv1.JobSpec{Command: []string{"true"}}
	cpuStart := cpu.Now()
	start := time.Now()
	var g errgroup.Group
	batch = max(batch, 1)
	chunks := make(chan int, n/batch+1) // sizes of the SubmitJobs calls
	for left := n; left > 0; left -= batch {
		chunks <- min(batch, left)
	}
	close(chunks)
	for w := 0; w < submitters; w++ {
		g.Go(func() error {
			for size := range chunks {
				if size == 1 {
					if _, err := rig.jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec})); err != nil {
						return err
					}
					continue
				}
				req := &hodeiv1.SubmitJobsRequest{}
				for i := 0; i < size; i++ {
					req.Specs = append(req.Specs, spec)
				}
				if _, err := rig.jobs.SubmitJobs(ctx, connect.NewRequest(req)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	if presubmit {
		// Every job is in; the clock starts with the agents.
		cpuStart, start = cpu.Now(), time.Now()
		if err := rig.startAgents(ctx); err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		// Asks whether any job is not yet final (a partial index holds
		// just those), four times a second: the first one found answers,
		// where a count read every unfinished job and, polled faster,
		// loaded the database being measured. The end of the run is the
		// last job's finish time, not the moment the poll noticed it.
		const unfinished = "FROM jobs WHERE state IN ('queued', 'assigned', 'running', 'retrying')"
		var busy bool
		if err := rig.db.QueryRow(ctx, "SELECT EXISTS (SELECT 1 "+unfinished+")").Scan(&busy); err != nil {
			return 0, err
		}
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			var left int
			if err := rig.db.QueryRow(ctx, "SELECT count(*) "+unfinished).Scan(&left); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("%d of %d jobs not done", left, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
	var end time.Time
	if err := rig.db.QueryRow(ctx, "SELECT max(finished_at) FROM jobs").Scan(&end); err != nil {
		return 0, err
	}
	elapsed := end.Sub(start)
	rate := float64(n) / elapsed.Seconds()
	if benchPGStats {
		printPGStats(ctx, rig, cpuStart, elapsed, n)
	}
	return rate, nil
}

func printPGStats(ctx context.Context, rig *benchRig, start cpu.Use, elapsed time.Duration, jobs int) {
	used := cpu.Now().Sub(start)
	perJob := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(jobs) }
	self, children, pg := used.Self, used.Children, used.Postgres
	fmt.Fprintf(os.Stderr, "cpu over %.1fs (%d cores = %.1fs): hodei (server, agents, client) %.1fs = %.0f µs/job, job processes %.1fs = %.0f µs/job, postgres %.1fs = %.0f µs/job\n",
		elapsed.Seconds(), runtime.NumCPU(), float64(runtime.NumCPU())*elapsed.Seconds(),
		self.Seconds(), perJob(self), children.Seconds(), perJob(children), pg.Seconds(), perJob(pg))
	var walRecords, walFPI, walBytes int64
	if rig.db.QueryRow(ctx, `SELECT wal_records, wal_fpi, wal_bytes::bigint FROM pg_stat_wal`).Scan(&walRecords, &walFPI, &walBytes) == nil {
		fmt.Fprintf(os.Stderr, "wal since the cluster started: %.1f records/job, %.2f full pages/job, %.0f bytes/job\n",
			float64(walRecords)/float64(jobs), float64(walFPI)/float64(jobs), float64(walBytes)/float64(jobs))
	}
	rows, err := rig.db.Query(ctx, `SELECT calls, round(total_exec_time)::bigint, round(total_plan_time)::bigint, round(max_exec_time)::bigint, rows, wal_bytes::bigint, left(regexp_replace(query, '\s+', ' ', 'g'), 100)
		FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15`)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pg_stat_statements:", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var calls, ms, planMS, maxMS, nrows, wal int64
		var q string
		if rows.Scan(&calls, &ms, &planMS, &maxMS, &nrows, &wal, &q) == nil {
			fmt.Fprintf(os.Stderr, "%8d calls %7d ms %6d ms planning %5d ms max %8d rows %6d KiB wal  %s\n", calls, ms, planMS, maxMS, nrows, wal>>10, q)
		}
	}
}

// forkExecRate runs n `true` processes with the given concurrency.
func forkExecRate(ctx context.Context, n, concurrency int) (float64, error) {
	start := time.Now()
	var g errgroup.Group
	g.SetLimit(concurrency)
	for i := 0; i < n; i++ {
		g.Go(func() error { return exec.CommandContext(ctx, "true").Run() })
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
