package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/agent"
	"github.com/hodei-dev/hodei/internal/platform"
	"github.com/hodei-dev/hodei/internal/store"
)

// benchRig is a server on an embedded PostgreSQL (default durability)
// with in-process agents, for the dispatch benchmarks.
type benchRig struct {
	addr   string
	url    string // the database's
	store  *store.Store
	db     *pgxpool.Pool // what the benchmark reads in the database itself
	jobs   hodeiv1connect.JobServiceClient
	agents []*agent.Agent
	run    func(*agent.Agent) // starts an agent
	stop   func()
}

// rigConfig configures newBenchRig.
type rigConfig struct {
	agents, slots int
	// prefetch and adaptive are the agents' Prefetch and AdaptivePrefetch.
	prefetch int
	adaptive bool
	noop     bool // the agents' NoopExec
	// hold registers the agents without starting them (startAgents
	// starts them).
	hold    bool
	pgStats bool // the database loads pg_stat_statements
	onRun   func(jobID string)
	guard   []string // the agents' GuardCommand
	// prepare, if set, runs on the migrated database before the platform
	// starts (loading a history).
	prepare func(ctx context.Context, url string) error
}

// newBenchRig starts the platform and its agents and waits until every
// agent is connected; with hold, the agents are registered but not
// started (startAgents starts them).
func newBenchRig(ctx context.Context, rc rigConfig) (*benchRig, error) {
	url, stopDB, err := benchDatabase(ctx, rc.pgStats)
	if err != nil {
		return nil, err
	}
	if rc.prepare != nil {
		if err := rc.prepare(ctx, url); err != nil {
			stopDB()
			return nil, err
		}
	}
	addr, hc, stopPlatform, err := startPlatform(ctx, platform.Config{DatabaseURL: url})
	if err != nil {
		stopDB()
		return nil, err
	}
	stopBench := func() { stopPlatform(); stopDB() }
	log := platform.NewLogger(io.Discard)
	ctx, cancel := context.WithCancel(ctx)
	r := &benchRig{addr: addr, url: url}
	var g errgroup.Group
	r.run = func(a *agent.Agent) { g.Go(func() error { return a.Run(ctx) }) }
	r.stop = func() {
		cancel()
		g.Wait() //nolint:errcheck
		if r.store != nil {
			r.store.Close()
		}
		if r.db != nil {
			r.db.Close()
		}
		stopBench()
	}
	if r.store, err = store.Open(ctx, store.Config{URL: url}); err != nil {
		r.stop()
		return nil, err
	}
	if r.db, err = pgxpool.New(ctx, url); err != nil {
		r.stop()
		return nil, err
	}
	for i := 0; i < rc.agents; i++ {
		_, token, err := r.store.NewWorker(ctx, "bench", "", nil, time.Minute)
		if err != nil {
			r.stop()
			return nil, err
		}
		a, err := agent.New(agent.Config{Servers: []string{r.addr}, BootstrapToken: token, Slots: rc.slots, Prefetch: rc.prefetch, AdaptivePrefetch: rc.adaptive, NoopExec: rc.noop, OnRunJob: rc.onRun, Logger: log, GuardCommand: rc.guard})
		if err != nil {
			r.stop()
			return nil, err
		}
		r.agents = append(r.agents, a)
	}
	r.jobs = hodeiv1connect.NewJobServiceClient(hc, "http://"+r.addr, connect.WithGRPC())
	if !rc.hold {
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
