package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hodei-dev/hodei/internal/bench"
	"github.com/hodei-dev/hodei/internal/cli"
	"github.com/hodei-dev/hodei/internal/platform"
)

const benchUsage = "usage: hodei bench startup|events|dispatch|throughput|logs|provision [flags]"

// runBench parses a benchmark's flags into its config and runs it; each
// writes its lines to stdout.
func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(benchUsage)
	}
	if cli.IsHelp(args[0]) {
		fmt.Println(benchUsage)
		return errHelp
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

func benchStartup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench startup", flag.ContinueOnError)
	var cfg bench.StartupConfig
	fs.IntVar(&cfg.Runs, "runs", 3, "repetitions; the median is reported")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return bench.Startup(ctx, os.Stdout, cfg)
}

func benchEvents(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench events", flag.ContinueOnError)
	var cfg bench.EventsConfig
	fs.IntVar(&cfg.Total, "total", 100_000, "events of the throughput phase")
	fs.IntVar(&cfg.Publishers, "publishers", 4, "concurrent publishers")
	fs.IntVar(&cfg.BatchPerTx, "batch", 50, "events per transaction in the throughput phase")
	fs.IntVar(&cfg.Rate, "rate", 1000, "events per second of the latency phase (one per transaction)")
	fs.DurationVar(&cfg.RateDuration, "duration", 5*time.Second, "length of the latency phase")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	res, err := bench.Events(ctx, cfg, platform.NewLogger(io.Discard))
	if err != nil {
		return err
	}
	fmt.Println(res.Line())
	return nil
}

func benchDispatch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench dispatch", flag.ContinueOnError)
	var cfg bench.DispatchConfig
	fs.IntVar(&cfg.Jobs, "jobs", 500, "jobs to submit")
	fs.IntVar(&cfg.Rate, "rate", 100, "jobs per second")
	fs.IntVar(&cfg.Agents, "agents", 4, "idle agents")
	fs.BoolVar(&cfg.Plaintext, "insecure-plaintext", false, "run the platform without TLS, for comparison")
	fs.IntVar(&cfg.Backlog, "backlog", 0, "jobs waiting, before the measurement, for a label no worker has (the explain-pending case)")
	fs.IntVar(&cfg.History, "history", 0, "load this many finished jobs (with log rows and events, spread over the last 29 days) into the database before the run")
	fs.BoolVar(&cfg.PGStats, "pgstats", false, "print to stderr the CPU used by this process and PostgreSQL while jobs are submitted, and the costliest statements")
	fs.BoolVar(&cfg.Retries, "retries", false, "retry each job once through RetryJob when it has run, and report the retries' latency apart (retry_p50_ms, retry_p99_ms)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return bench.Dispatch(ctx, os.Stdout, cfg)
}

func benchThroughput(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench throughput", flag.ContinueOnError)
	var cfg bench.ThroughputConfig
	fs.IntVar(&cfg.Jobs, "jobs", 5000, "jobs per mode")
	fs.IntVar(&cfg.Agents, "agents", 4, "agents")
	fs.BoolVar(&cfg.Plaintext, "insecure-plaintext", false, "run the platform without TLS, for comparison")
	fs.IntVar(&cfg.Slots, "slots", 8, "slots per agent")
	prefetch := prefetchFlag{adaptive: true, n: autoPrefetch}
	fs.Var(&prefetch, "prefetch", "jobs each agent accepts beyond its slots, or auto (agent --prefetch, whose default is auto)")
	fs.IntVar(&cfg.Submitters, "submitters", 8, "concurrent submitters")
	fs.IntVar(&cfg.Batch, "batch", 1000, "jobs per SubmitJobs call (at most 1000, the API's limit; 1: SubmitJob one at a time)")
	modes := fs.String("modes", "process,noop", "modes to run")
	fs.IntVar(&cfg.Rounds, "rounds", 1, "runs per mode; the result line is the median run's, with the range over all")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the run here")
	fs.StringVar(&cfg.MemProfile, "memprofile", "", "write an allocation profile of the run here (at its end)")
	fs.BoolVar(&cfg.PGStats, "pgstats", false, "print to stderr the CPU used by this process, its job processes and PostgreSQL (in all and per job), and the costliest statements")
	fs.BoolVar(&cfg.Presubmit, "presubmit", false, "submit every job before the agents start and time only their work, from the agents' start to the last job's end (the shape of river bench --num-total-jobs); default: submission is timed and runs while agents work")
	fs.IntVar(&cfg.History, "history", 0, "load this many finished jobs (with log rows and events, spread over the last 29 days) into the database before each run")
	fs.BoolVar(&cfg.HistoryExpired, "history-expired", false, "make the --history jobs 31 to 60 days old, past the default job retention, so that the retention duty deletes them during the run (prints history_deleted)")
	fs.BoolVar(&cfg.HoldSnapshot, "hold-snapshot", false, "run each round twice, without and with a REPEATABLE READ snapshot held for the whole run (a long report query), and print held_ratio")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg.Prefetch, cfg.AdaptivePrefetch = prefetch.n, prefetch.adaptive
	cfg.Modes = strings.Split(*modes, ",")
	// The agents run with a guardian, as `hodei agent` does.
	cfg.AgentGuard, _ = guardCommand()
	return bench.Throughput(ctx, os.Stdout, cfg)
}

func benchLogs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench logs", flag.ContinueOnError)
	var cfg bench.LogsConfig
	fs.IntVar(&cfg.Lines, "lines", 1_000_000, "lines of the as-fast-as-possible job")
	fs.IntVar(&cfg.Rate, "rate", 50_000, "lines per second of the steady job")
	fs.DurationVar(&cfg.Steady, "steady", 4*time.Second, "length of the steady job")
	fs.Float64Var(&cfg.GiB, "gib", 0, "also run a job writing this many GiB (1 KiB lines) and report peak RSS")
	fs.IntVar(&cfg.Secrets, "secrets", 0, "give the jobs this many secrets (values they never print): the cost of redaction")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return bench.Logs(ctx, os.Stdout, cfg)
}

func benchProvision(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench provision", flag.ContinueOnError)
	var cfg bench.ProvisionConfig
	fs.IntVar(&cfg.Runs, "runs", 10, "workers per provider; the median is reported")
	fs.StringVar(&cfg.DockerImage, "docker-image", "hodei-worker:dev", "image of the Docker workers")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return bench.Provision(ctx, os.Stdout, cfg)
}

func benchEmit(args []string) error {
	fs := flag.NewFlagSet("bench emit", flag.ContinueOnError)
	var cfg bench.EmitConfig
	fs.Int64Var(&cfg.Lines, "lines", 1000, "lines")
	fs.IntVar(&cfg.Rate, "rate", 0, "lines per second (0: unpaced)")
	fs.IntVar(&cfg.Size, "size", 0, "pad lines to this many bytes")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return bench.Emit(os.Stdout, cfg)
}
