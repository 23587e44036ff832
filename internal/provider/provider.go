// Package provider is the seam between Hodei and whatever starts workers
// (local processes, Docker containers, Kubernetes pods): the Provider
// interface every implementation satisfies, and the Pool that turns the
// scheduler's demand into provisioning requests within a provider's limit.
package provider

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Spec is what a worker must offer.
type Spec struct {
	Image  string
	Labels map[string]string
}

// Provider starts and stops workers. Handles are opaque, serialisable and
// stored with the worker.
type Provider interface {
	Name() string
	Kind() string
	// Provision starts a worker that will enroll with token.
	Provision(ctx context.Context, workerID, token string, spec Spec) (handle []byte, err error)
	// Inspect reports whether the worker is still running.
	Inspect(ctx context.Context, handle []byte) (running bool, err error)
	// Terminate stops a worker (grace, then force). Terminating a worker
	// that is gone is not an error.
	Terminate(ctx context.Context, handle []byte) error
	// List returns the workers this provider runs for this installation
	// (including those a previous server process started), for orphan
	// reconciliation at start.
	List(ctx context.Context) ([]Instance, error)
	// Health reports whether the provider can start workers now.
	Health(ctx context.Context) error
}

// Instance is a running worker as its provider sees it.
type Instance struct {
	WorkerID string
	Handle   []byte
}

// Registrar is the part of the store the pool uses.
type Registrar interface {
	NewWorker(ctx context.Context, provider, image string, labels map[string]string, ttl time.Duration) (id, token string, err error)
	WorkerProvisioned(ctx context.Context, id, provider, image string, handle []byte) error
}

// PoolConfig configures a Pool.
type PoolConfig struct {
	MaxWorkers int           // default 4
	StartTTL   time.Duration // how long a started worker may take to connect; default 30s
	Logger     *slog.Logger
}

// Pool provisions workers for waiting jobs, up to MaxWorkers started and
// not yet terminated. It is the minimal demand rule; the autoscaler
// (per image and labels, idle scale-down) replaces it.
type Pool struct {
	cfg       PoolConfig
	p         Provider
	reg       Registrar
	connected func(workerID string) bool
	log       *slog.Logger

	mu      sync.Mutex
	workers map[string]time.Time // id -> start time
	handles map[string][]byte
}

// NewPool returns a pool; connected reports whether a worker has
// connected to this replica.
func NewPool(cfg PoolConfig, p Provider, reg Registrar, connected func(string) bool) *Pool {
	if cfg.MaxWorkers <= 0 {
		cfg.MaxWorkers = 4
	}
	if cfg.StartTTL <= 0 {
		cfg.StartTTL = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pool{cfg: cfg, p: p, reg: reg, connected: connected, log: cfg.Logger, workers: map[string]time.Time{}, handles: map[string][]byte{}}
}

// Ensure starts workers for waiting jobs that no starting worker will take.
func (pl *Pool) Ensure(ctx context.Context, waiting int) {
	pl.reap(ctx)
	pl.mu.Lock()
	starting := 0
	for id, t := range pl.workers {
		if !pl.connected(id) && time.Since(t) < pl.cfg.StartTTL {
			starting++
		}
	}
	n := min(waiting-starting, pl.cfg.MaxWorkers-len(pl.workers))
	pl.mu.Unlock()
	for i := 0; i < n; i++ {
		if err := pl.start(ctx); err != nil {
			pl.log.Error("provision worker", "provider", pl.p.Name(), "err", err)
			return
		}
	}
}

func (pl *Pool) start(ctx context.Context) error {
	id, token, err := pl.reg.NewWorker(ctx, pl.p.Name(), "", nil, pl.cfg.StartTTL)
	if err != nil {
		return err
	}
	h, err := pl.p.Provision(ctx, id, token, Spec{})
	if err != nil {
		return err
	}
	pl.mu.Lock()
	pl.workers[id] = time.Now()
	pl.handles[id] = h
	pl.mu.Unlock()
	pl.log.Info("worker provisioned", "provider", pl.p.Name(), "worker_id", id)
	return pl.reg.WorkerProvisioned(ctx, id, pl.p.Name(), "", h)
}

// reap forgets workers whose process (container, pod) has ended.
func (pl *Pool) reap(ctx context.Context) {
	pl.mu.Lock()
	handles := make(map[string][]byte, len(pl.handles))
	for id, h := range pl.handles {
		handles[id] = h
	}
	pl.mu.Unlock()
	for id, h := range handles {
		if running, err := pl.p.Inspect(ctx, h); err == nil && !running {
			pl.Forget(id)
		}
	}
}

// Forget drops a worker that ended (so its slot in MaxWorkers frees up).
func (pl *Pool) Forget(id string) {
	pl.mu.Lock()
	delete(pl.workers, id)
	delete(pl.handles, id)
	pl.mu.Unlock()
}

// Close terminates every worker the pool started.
func (pl *Pool) Close(ctx context.Context) {
	pl.mu.Lock()
	hs := make([][]byte, 0, len(pl.handles))
	for _, h := range pl.handles {
		hs = append(hs, h)
	}
	pl.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() {
			if err := pl.p.Terminate(ctx, h); err != nil {
				pl.log.Warn("terminate worker", "err", err)
			}
		})
	}
	wg.Wait()
}
