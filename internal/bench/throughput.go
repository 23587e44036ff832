package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/bench/cpu"
)

// ThroughputConfig configures Throughput.
type ThroughputConfig struct {
	Jobs int // jobs per mode
	// Plaintext runs the platform without TLS (--insecure-plaintext),
	// for comparison.
	Plaintext bool
	Agents    int // in-process agents
	Slots     int // slots per agent
	// Prefetch and AdaptivePrefetch are the agents' (agent --prefetch:
	// a number of jobs, or auto, a bound).
	Prefetch         int
	AdaptivePrefetch bool
	Submitters       int // concurrent submitters
	// Batch is the number of jobs per SubmitJobs call (at most 1000, the
	// API's limit; 1: SubmitJob one at a time).
	Batch int
	// Modes are the modes to run: process, noop, or both.
	Modes []string
	// Rounds is the number of runs per mode; the result line is the
	// median run's, with the range over all.
	Rounds int
	// CPUProfile and MemProfile name files for Go profiles of the run
	// (the allocation profile is written at its end); empty: none.
	CPUProfile, MemProfile string
	// PGStats prints to stderr the CPU used by this process, its job
	// processes and PostgreSQL (in all and per job), and the costliest
	// statements.
	PGStats bool
	// Presubmit submits every job before the agents start and times only
	// their work, from the agents' start to the last job's end (the shape
	// of river bench --num-total-jobs); otherwise submission is timed and
	// runs while agents work.
	Presubmit bool
	// History is the number of finished jobs (with log rows and events)
	// loaded into the database before each run (loadHistory).
	History int
	// HistoryExpired makes the history older than the job retention, so
	// that the retention duty deletes it during the run; the result line
	// then tells how many of its jobs were gone at the end.
	HistoryExpired bool
	// HoldSnapshot runs every round twice, without and with a REPEATABLE
	// READ snapshot held from before the agents start to the run's end,
	// and reports the ratio of the two rates.
	HoldSnapshot bool
	// AgentGuard is the agents' guardian command (agent.Config.GuardCommand),
	// as `hodei agent` starts it; empty: none.
	AgentGuard []string
}

// Throughput submits jobs in bulk to connected agents and measures
// jobs/s until all are final: with real `true` processes (mode=process,
// compared with this machine's raw fork/exec rate at the same
// concurrency, measured in the same run) and with the agents' no-op mode
// (mode=noop: benchmark only, the control plane alone). It writes a
// result line per mode to out.
func Throughput(ctx context.Context, out io.Writer, cfg ThroughputConfig) error {
	if err := cfg.check(); err != nil {
		return err
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.MemProfile != "" {
		defer func() {
			if f, err := os.Create(cfg.MemProfile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	for _, mode := range []string{"process", "noop"} {
		if !slices.Contains(cfg.Modes, mode) {
			continue
		}
		if err := throughputMode(ctx, out, cfg, mode); err != nil {
			return err
		}
	}
	return nil
}

// throughputMode makes cfg.Rounds runs of one mode and writes its result
// line.
func throughputMode(ctx context.Context, out io.Writer, cfg ThroughputConfig, mode string) error {
	// The machine's own fork/exec rate is measured before and after
	// every platform run, at the same concurrency, and a run is
	// compared with the mean of the two: this machine's speed drifts
	// by ±25 % within minutes.
	type run struct {
		rate, fork float64
		shape      runShape
	}
	var runs, held []run
	var forkBefore float64
	if mode == "process" {
		var err error
		if forkBefore, err = forkExecRate(ctx, cfg.Jobs/2, cfg.Agents*cfg.Slots); err != nil {
			return err
		}
	}
	for round := range cfg.Rounds {
		// With HoldSnapshot, each round runs without and with the held
		// snapshot, in alternating order.
		holds := []bool{false}
		if cfg.HoldSnapshot {
			holds = []bool{round%2 == 1, round%2 == 0}
		}
		for _, hold := range holds {
			rate, shape, err := throughputOnce(ctx, cfg, mode == "noop", hold)
			if err != nil {
				return err
			}
			r := run{rate: rate, shape: shape}
			if mode == "process" {
				forkAfter, err := forkExecRate(ctx, cfg.Jobs/2, cfg.Agents*cfg.Slots)
				if err != nil {
					return err
				}
				r.fork = (forkBefore + forkAfter) / 2
				forkBefore = forkAfter
			}
			if hold {
				held = append(held, r)
			} else {
				runs = append(runs, r)
			}
		}
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
	prefetch := strconv.Itoa(cfg.Prefetch)
	if cfg.AdaptivePrefetch {
		prefetch = "auto"
	}
	sh := med.shape
	scale := fmt.Sprintf("tenth_min_ratio=%.2f tenths=%s history=%d rss_mib=%.0f tables_mib=%.0f indexes_mib=%.0f list_ms=%.1f list_failed_ms=%.1f job_page_ms=%.1f",
		sh.minTenth(med.rate), sh.tenthsText(), cfg.History, sh.rssMiB, sh.tablesMiB, sh.indexMiB, ms(sh.pages.list), ms(sh.pages.listFailed), ms(sh.pages.job))
	if cfg.HistoryExpired {
		scale += fmt.Sprintf(" history_expired=true history_deleted=%d", sh.historyDeleted)
	}
	if len(held) > 0 {
		slices.SortFunc(held, func(a, b run) int { return cmp.Compare(figure(a), figure(b)) })
		h := held[len(held)/2]
		scale += fmt.Sprintf(" held_jobs_per_sec=%.0f held_ratio=%.2f held_tenth_min_ratio=%.2f", h.rate, figure(h)/figure(med), h.shape.minTenth(h.rate))
	}
	if mode == "noop" {
		fmt.Fprintf(out, "result name=throughput mode=noop jobs_per_sec=%.0f %sjobs=%d agents=%d slots=%d prefetch=%s batch=%d presubmit=%t %s\n", med.rate, spread, cfg.Jobs, cfg.Agents, cfg.Slots, prefetch, cfg.Batch, cfg.Presubmit, scale)
		return nil
	}
	fmt.Fprintf(out, "result name=throughput mode=process jobs_per_sec=%.0f fork_exec_per_sec=%.0f ratio=%.2f %sjobs=%d agents=%d slots=%d prefetch=%s batch=%d presubmit=%t %s\n", med.rate, med.fork, med.rate/med.fork, spread, cfg.Jobs, cfg.Agents, cfg.Slots, prefetch, cfg.Batch, cfg.Presubmit, scale)
	return nil
}

// throughputOnce makes one run on a fresh platform; with hold, a
// snapshot is held from before the agents start (or the submission, when
// it is timed) to the run's end.
func throughputOnce(ctx context.Context, cfg ThroughputConfig, noop, hold bool) (float64, runShape, error) {
	n, submitters, batch, presubmit := cfg.Jobs, cfg.Submitters, cfg.Batch, cfg.Presubmit
	rc := rigConfig{agents: cfg.Agents, slots: cfg.Slots, prefetch: cfg.Prefetch, adaptive: cfg.AdaptivePrefetch,
		noop: noop, hold: presubmit, pgStats: cfg.PGStats, guard: cfg.AgentGuard, plaintext: cfg.Plaintext}
	if cfg.History > 0 {
		rc.prepare = func(ctx context.Context, url string) error {
			return loadHistory(ctx, url, cfg.History, cfg.HistoryExpired, os.Stderr)
		}
	}
	rig, err := newBenchRig(ctx, rc)
	if err != nil {
		return 0, runShape{}, err
	}
	defer rig.stop()
	var holder *snapshotHolder
	if hold && !presubmit {
		if holder, err = holdSnapshot(ctx, rig.url); err != nil {
			return 0, runShape{}, err
		}
		defer holder.release()
	}
	spec := &hodeiv1.JobSpec{Command: []string{"true"}}
	cpuStart := cpu.Now()
	start := time.Now()
	submitted := start // the run's jobs were created from here on
	if err := submitAll(ctx, rig.jobs, spec, n, batch, submitters); err != nil {
		return 0, runShape{}, err
	}
	if presubmit {
		if hold {
			if holder, err = holdSnapshot(ctx, rig.url); err != nil {
				return 0, runShape{}, err
			}
			defer holder.release()
		}
		// Every job is in; the clock starts with the agents.
		if cfg.PGStats {
			// The statements of the run only, not the history's load or
			// the submissions.
			if _, err := rig.db.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
				return 0, runShape{}, err
			}
		}
		cpuStart, start = cpu.Now(), time.Now()
		if err := rig.startAgents(ctx); err != nil {
			return 0, runShape{}, err
		}
	}
	end, err := awaitFinished(ctx, rig, n, submitted)
	if err != nil {
		return 0, runShape{}, err
	}
	elapsed := end.Sub(start)
	rate := float64(n) / elapsed.Seconds()
	if cfg.PGStats {
		printPGStats(ctx, rig, cpuStart, elapsed, n)
	}
	shape, err := measureShape(ctx, rig.db, submitted, start, n)
	if err != nil {
		return rate, shape, err
	}
	// The job page is the oldest job stored's, unless the retention is
	// deleting the history: then the oldest of the run's.
	var oldestFrom time.Time
	if cfg.HistoryExpired {
		// The history's jobs were created before the run's, through the
		// creation-time index.
		var left int
		if err := rig.db.QueryRow(ctx, "SELECT count(*) FROM jobs WHERE created_at < $1", submitted).Scan(&left); err != nil {
			return rate, shape, err
		}
		shape.historyDeleted = cfg.History - left
		oldestFrom = submitted
	}
	shape.pages, err = measurePages(ctx, rig, oldestFrom)
	return rate, shape, err
}

// awaitFinished waits until every one of the n jobs (created at or after
// submitted) is final and returns the last one's finish time.
func awaitFinished(ctx context.Context, rig *benchRig, n int, submitted time.Time) (time.Time, error) {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		// Asks whether any job is not yet final, four times a second: the
		// first one found answers, where a count read every unfinished job
		// and, polled faster, loaded the database being measured. Each
		// EXISTS matches the predicate of a partial index (ready, live);
		// one over all four states matched neither, and with a long
		// history the planner scanned the whole table for it, seconds of
		// a core taken from the run measured. The end of the run is the
		// last job's finish time, not the moment the poll noticed it.
		var busy bool
		if err := rig.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('queued', 'retrying'))
			OR EXISTS (SELECT 1 FROM jobs WHERE state IN ('assigned', 'running'))`).Scan(&busy); err != nil {
			return time.Time{}, err
		}
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			var left int
			if err := rig.db.QueryRow(ctx, "SELECT count(*) FROM jobs WHERE state IN ('queued', 'retrying', 'assigned', 'running')").Scan(&left); err != nil {
				return time.Time{}, err
			}
			return time.Time{}, fmt.Errorf("%d of %d jobs not done", left, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// The run's jobs only, through the creation-time index: a history
	// loaded before the run would otherwise be read whole.
	var end time.Time
	if err := rig.db.QueryRow(ctx, "SELECT max(finished_at) FROM jobs WHERE created_at >= $1", submitted).Scan(&end); err != nil {
		return time.Time{}, err
	}
	return end, nil
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

// submitAll submits n copies of spec, batch per SubmitJobs call (1:
// SubmitJob one at a time), on submitters concurrent connections.
func submitAll(ctx context.Context, jobs hodeiv1connect.JobServiceClient, spec *hodeiv1.JobSpec, n, batch, submitters int) error {
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
					if _, err := jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec})); err != nil {
						return err
					}
					continue
				}
				req := &hodeiv1.SubmitJobsRequest{}
				for i := 0; i < size; i++ {
					req.Specs = append(req.Specs, spec)
				}
				if _, err := jobs.SubmitJobs(ctx, connect.NewRequest(req)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}
