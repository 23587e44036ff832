package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/hodei-dev/hodei/internal/agent"
	"github.com/hodei-dev/hodei/internal/autoscale"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/provider/docker"
	"github.com/hodei-dev/hodei/internal/provider/process"
	"github.com/hodei-dev/hodei/internal/scheduler"
	"github.com/hodei-dev/hodei/internal/server"
	"github.com/hodei-dev/hodei/internal/store"
)

func newLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("HODEI_LOG_LEVEL") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// platformConfig is what server and dev share.
type platformConfig struct {
	listen      string
	databaseURL string
	maxWorkers  int
	agentLog    io.Writer
	agentBinary string        // default: this executable
	lease       time.Duration // default: the server's
	// eventRetention is how long delivered events are kept; default 7 days.
	eventRetention time.Duration
	ready          func(addr string) // called once the server listens
	// idleTimeout and workerLabels configure the process provider's
	// workers (defaults 60s, none); healthInterval the health monitor.
	idleTimeout    time.Duration
	workerLabels   map[string]string
	healthInterval time.Duration
	// docker configures the Docker provider; off when maxWorkers is 0.
	docker dockerConfig
	// stopAllWorkers terminates every provider's workers on exit (dev mode,
	// whose database goes with it). A server leaves Docker workers running
	// so that they reconnect when it is back.
	stopAllWorkers bool
}

type dockerConfig struct {
	maxWorkers int
	image      string // default image of workers whose job names none
	host       string // engine address; default from DOCKER_HOST, else the local socket
	binary     string // static hodei binary mounted into containers; default this executable
	labels     map[string]string
}

// runPlatform runs one server replica with the process provider until ctx
// ends. Shutdown order: stop accepting (listener), stop dispatch, stop
// workers we started, close the store.
func runPlatform(ctx context.Context, log *slog.Logger, pc platformConfig) error {
	if pc.eventRetention <= 0 {
		pc.eventRetention = 7 * 24 * time.Hour
	}
	if pc.idleTimeout <= 0 {
		pc.idleTimeout = time.Minute
	}
	st, err := store.Open(ctx, store.Config{URL: pc.databaseURL, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	bus := st.NewBus(eventbus.Config{Logger: log, Metrics: eventbus.NewMetrics(reg)})

	ln, err := net.Listen("tcp", pc.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := ln.Addr().String()
	replica := "replica-" + randomHex(6)
	srv, err := server.New(server.Config{ReplicaID: replica, Logger: log, Registry: reg, Lease: pc.lease}, st, bus)
	if err != nil {
		return err
	}
	// Providers. With --max-workers 0 this server starts no workers:
	// agents are started elsewhere (another host, a test) and connect on
	// their own.
	var providers []provider.Provider
	var local *process.Provider
	if pc.maxWorkers > 0 {
		// Agents drain for 5 s and are killed after 20 s when the server stops.
		local, err = process.New(process.Config{Server: addr, Stderr: pc.agentLog, Grace: 20 * time.Second, Binary: pc.agentBinary,
			Args: []string{"--drain-timeout", "5s", "--grace", "5s"}})
		if err != nil {
			return err
		}
		if err := st.SeedProvider(ctx, store.Provider{Name: local.Name(), Kind: local.Kind(), MaxWorkers: pc.maxWorkers,
			IdleTimeout: pc.idleTimeout, Labels: pc.workerLabels}); err != nil {
			return err
		}
		providers = append(providers, local)
	}
	if pc.docker.maxWorkers > 0 {
		d, err := newDockerProvider(ctx, log, st, addr, pc)
		if err != nil {
			return err
		}
		defer d.Close()
		providers = append(providers, d)
	}
	smetrics := scheduler.NewMetrics(reg)
	disp := scheduler.New(scheduler.Config{Logger: log, Metrics: smetrics}, st, bus, srv.Workers())
	scaler := autoscale.New(autoscale.Config{Logger: log, Registry: reg, HealthInterval: pc.healthInterval}, st, bus, providers)

	leaders := []*scheduler.Leader{{Store: st, Key: scheduler.HousekeepingLock, Name: "housekeeping", Logger: log, Duties: []scheduler.Duty{
		// last_seen lags up to two heartbeat intervals (beat, then the
		// coalesced write): the reaper allows for that on top of the lease.
		scheduler.Reaper(st, srv.Lease()+2*srv.HeartbeatInterval(), srv.Lease()/2, log, disp.Kick),
		func(ctx context.Context) error { return bus.RunRetention(ctx, time.Minute, pc.eventRetention) },
		scheduler.QueueDepth(st, bus, smetrics, 500*time.Millisecond, log),
	}}}
	if len(providers) > 0 {
		// Only replicas with providers campaign for scaling. Replicas that
		// run providers should configure the same ones.
		leaders = append(leaders, &scheduler.Leader{Store: st, Key: scheduler.ScalingLock, Name: "scaling", Logger: log,
			Duties: []scheduler.Duty{scaler.Run, scaler.Health}})
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return bus.Run(gctx) })
	for _, l := range leaders {
		g.Go(func() error { return l.Run(gctx) })
	}
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return disp.Run(gctx) })
	g.Go(func() error { return srv.Serve(gctx, ln) })
	log.Info("hodei server listening", "addr", addr, "replica_id", replica)
	if pc.ready != nil {
		pc.ready(addr)
	}
	<-gctx.Done()
	tctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	if local != nil { // the agents this server started go with it
		local.TerminateAll(tctx)
	}
	if pc.stopAllWorkers {
		for _, p := range providers {
			insts, err := p.List(tctx)
			if err != nil {
				log.Warn("stop workers", "provider", p.Name(), "err", err)
				continue
			}
			for _, in := range insts {
				if err := p.Terminate(tctx, in.Handle); err != nil {
					log.Warn("stop worker", "provider", p.Name(), "worker_id", in.WorkerID, "err", err)
				}
			}
		}
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// platformFlags registers the flags server and dev share.
func platformFlags(fs *flag.FlagSet, pc *platformConfig) {
	fs.IntVar(&pc.maxWorkers, "max-workers", 4, "most workers the process provider runs (0: start none; agents connect on their own)")
	fs.DurationVar(&pc.idleTimeout, "idle-timeout", time.Minute, "a process worker idle this long is stopped")
	fs.Var((*kvFlag)(&pc.workerLabels), "worker-label", "label K=V of the process provider's workers (repeatable)")
	fs.DurationVar(&pc.eventRetention, "event-retention", 7*24*time.Hour, "delivered events older than this are pruned")
	fs.DurationVar(&pc.lease, "lease", 10*time.Second, "a worker silent this long loses its attempts (worker_lost)")
	fs.DurationVar(&pc.healthInterval, "health-interval", 30*time.Second, "time between health checks of each provider")
	fs.IntVar(&pc.docker.maxWorkers, "docker-max-workers", 0, "most workers the Docker provider runs (0: no Docker provider)")
	fs.StringVar(&pc.docker.image, "docker-image", "hodei-worker:dev", "image of Docker workers whose job names no image")
	fs.StringVar(&pc.docker.host, "docker-host", "", "Docker engine address (default: DOCKER_HOST, else the local socket)")
	fs.StringVar(&pc.docker.binary, "docker-binary", "", "static hodei binary mounted into containers (default: this executable)")
	fs.Var((*kvFlag)(&pc.docker.labels), "docker-worker-label", "label K=V of the Docker provider's workers (repeatable)")
}

// newDockerProvider builds the Docker provider and registers it.
func newDockerProvider(ctx context.Context, log *slog.Logger, st *store.Store, addr string, pc platformConfig) (*docker.Provider, error) {
	install, err := st.InstallationID(ctx)
	if err != nil {
		return nil, err
	}
	bin := pc.docker.binary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	d, err := docker.New(docker.Config{Host: pc.docker.host, Binary: bin, Server: addr, DefaultImage: pc.docker.image, InstallID: install, Logger: log,
		Grace: 20 * time.Second, Args: []string{"--drain-timeout", "5s", "--grace", "5s"}})
	if err != nil {
		return nil, fmt.Errorf("docker provider: %w", err)
	}
	if err := st.SeedProvider(ctx, store.Provider{Name: d.Name(), Kind: d.Kind(), MaxWorkers: pc.docker.maxWorkers,
		IdleTimeout: pc.idleTimeout, Labels: pc.docker.labels, AnyImage: true}); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func runServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	pc := platformConfig{agentLog: os.Stderr}
	fs.StringVar(&pc.listen, "listen", envOr("HODEI_LISTEN", "127.0.0.1:7070"), "address to serve on")
	platformFlags(fs, &pc)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if pc.databaseURL = os.Getenv("HODEI_DATABASE_URL"); pc.databaseURL == "" {
		return errors.New("HODEI_DATABASE_URL is not set (use `hodei dev` for an embedded PostgreSQL)")
	}
	return runPlatform(ctx, newLogger(os.Stderr), pc)
}

func runDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	pc := platformConfig{agentLog: os.Stderr}
	fs.StringVar(&pc.listen, "listen", "127.0.0.1:7070", "address to serve on")
	dataDir := fs.String("data-dir", "", "keep the embedded PostgreSQL here (default: a temporary directory)")
	platformFlags(fs, &pc)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := newLogger(os.Stderr)
	url := os.Getenv("HODEI_DATABASE_URL")
	if url == "" {
		start := time.Now()
		c, err := pgembed.Start(ctx, pgembed.Config{DataDir: *dataDir, Logger: log})
		if err != nil {
			return fmt.Errorf("embedded postgres: %w", err)
		}
		defer c.Stop(context.Background()) //nolint:errcheck
		if err := c.CreateDatabase(ctx, "hodei"); err != nil && !strings.Contains(err.Error(), "already exists") {
			return err
		}
		url = c.URL("hodei")
		log.Info("embedded postgres ready", "url", url, "took", time.Since(start).Round(time.Millisecond))
	}
	pc.databaseURL = url
	pc.stopAllWorkers = true
	pc.ready = func(addr string) {
		fmt.Fprintf(os.Stderr, "\nHodei is running on %s. Try:\n  hodei run --server %s -- echo hello\n\n", addr, addr)
	}
	return runPlatform(ctx, log, pc)
}

// autoPrefetch bounds an adaptive prefetch (--prefetch auto). With a queue
// of what a worker finished in the last 100 ms, at most 64, instead of half
// that, at most 32, claims and result batches of `true` jobs held about
// twice as many jobs and PostgreSQL's CPU per job fell by about a sixth
// (bench throughput, alternating runs). The bound only matters for jobs
// shorter than 100 ms divided by it (the window already bounds the wait
// behind a queue); at 128 instead of 64 no-op mode ran about a tenth
// faster (5 of 6 pairs), `true` jobs (about 50 per worker per 100 ms) the
// same.
const autoPrefetch = 128

// prefetchFlag is --prefetch: a number of jobs, or auto.
type prefetchFlag struct {
	n        int
	adaptive bool
}

func (p *prefetchFlag) String() string {
	if p.adaptive {
		return "auto"
	}
	return strconv.Itoa(p.n)
}

func (p *prefetchFlag) Set(v string) error {
	if v == "auto" {
		*p = prefetchFlag{n: autoPrefetch, adaptive: true}
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is neither auto nor a number of jobs (0 or more)", v)
	}
	*p = prefetchFlag{n: n}
	return nil
}

func runAgent(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	servers := fs.String("server", envOr("HODEI_SERVER", "127.0.0.1:7070"), "server addresses, comma separated")
	slots := fs.Int("slots", 1, "concurrent jobs")
	prefetch := prefetchFlag{adaptive: true, n: autoPrefetch}
	fs.Var(&prefetch, "prefetch", "jobs accepted beyond --slots, started as slots free (short jobs: no idle slot between jobs); auto: as many as this worker finished in the last 100 ms, at most 128")
	noop := fs.Bool("noop-exec", false, "BENCHMARK ONLY: report success without running the process")
	drain := fs.Duration("drain-timeout", 30*time.Second, "on SIGTERM, how long running jobs may finish before they are cancelled")
	grace := fs.Duration("grace", 10*time.Second, "SIGTERM to SIGKILL grace for cancelled jobs")
	hard := fs.Duration("hard-timeout", 0, "on SIGTERM, when everything is killed and the agent exits 1 (default drain-timeout + grace + 10s)")
	maxJobs := fs.Int("max-jobs", 0, "retire (exit 0) after running this many jobs; 0: no limit (ephemeral workers use 1)")
	cpu := fs.Int64("cpu-millis", 0, "the most CPU one job may use here, in millicores (0: not stated)")
	mem := fs.Int64("memory-mib", 0, "the most memory one job may use here, in MiB (0: not stated)")
	var labels kvFlag
	fs.Var(&labels, "label", "worker label K=V (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := newLogger(os.Stderr)
	batch, _ := strconv.Atoi(os.Getenv("HODEI_LOG_BATCH_SIZE"))
	flush, _ := time.ParseDuration(os.Getenv("HODEI_LOG_FLUSH_INTERVAL"))
	a, err := agent.New(agent.Config{Servers: strings.Split(*servers, ","), BootstrapToken: os.Getenv("HODEI_BOOTSTRAP_TOKEN"),
		Labels: labels, Slots: *slots, BatchLines: batch, FlushInterval: flush, Version: version, Logger: log, NoopExec: *noop,
		DrainTimeout: *drain, Grace: *grace, HardTimeout: *hard, MaxJobs: *maxJobs, CPUMillis: *cpu, MemoryMiB: *mem, Prefetch: prefetch.n, AdaptivePrefetch: prefetch.adaptive})
	if err != nil {
		fmt.Fprintln(os.Stderr, "hodei:", err)
		return 2
	}
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hodei agent:", err)
		return 1
	}
	return 0
}

type kvFlag map[string]string

func (k *kvFlag) String() string { return fmt.Sprint(map[string]string(*k)) }
func (k *kvFlag) Set(s string) error {
	key, v, ok := strings.Cut(s, "=")
	if !ok || key == "" {
		return fmt.Errorf("want K=V, got %q", s)
	}
	if *k == nil {
		*k = kvFlag{}
	}
	(*k)[key] = v
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// runTestDB runs a throwaway PostgreSQL for `make test` and writes its URL
// to a file once it is ready; it stops on SIGINT/SIGTERM.
func runTestDB(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("testdb", flag.ContinueOnError)
	urlFile := fs.String("url-file", "", "write the admin URL here when ready")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := pgembed.Start(ctx, pgembed.Config{Settings: pgembed.ThrowawaySettings(), Logger: newLogger(os.Stderr)})
	if err != nil {
		return err
	}
	defer c.Stop(context.Background()) //nolint:errcheck
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile+".tmp", []byte(c.URL("postgres")), 0o600); err != nil {
			return err
		}
		if err := os.Rename(*urlFile+".tmp", *urlFile); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}
