// Package provider is the seam between Hodei and whatever starts workers
// (local processes, Docker containers, Kubernetes pods): the Provider
// interface every implementation satisfies, and the Pool that turns the
// scheduler's demand into provisioning requests within a provider's limit.
package provider

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
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
	MaxWorkers int // default 4
	// Labels are the labels every worker of this pool has; a job needing
	// other labels cannot be served by it.
	Labels map[string]string
	// AnyImage says the provider runs workers of any image (Docker,
	// Kubernetes); otherwise it serves only jobs that name no image.
	AnyImage bool
	StartTTL time.Duration // how long a started worker may take to connect; default 30s
	Logger   *slog.Logger
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
	workers map[string]started
	handles map[string][]byte
}

// started is a worker the pool started.
type started struct {
	at    time.Time
	image string
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
	return &Pool{cfg: cfg, p: p, reg: reg, connected: connected, log: cfg.Logger, workers: map[string]started{}, handles: map[string][]byte{}}
}

// Demand is a number of ready jobs that found no worker, by what they need.
type Demand struct {
	Image  string
	Labels map[string]string
	Jobs   []string // their ids, in dispatch order
	// Reason is set on demands Ensure cannot serve.
	Reason string
}

// CanServe says whether this pool can start a worker for a job needing
// image and labels, and if not, why.
func (pl *Pool) CanServe(image string, labels map[string]string) (bool, string) {
	if image != "" && !pl.cfg.AnyImage {
		return false, fmt.Sprintf("provider %s (%s) cannot run image %q", pl.p.Name(), pl.p.Kind(), image)
	}
	var missing []string
	for k, v := range labels {
		if have, ok := pl.cfg.Labels[k]; !ok || have != v {
			missing = append(missing, k+"="+v)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return false, fmt.Sprintf("provider %s starts no worker with label %s", pl.p.Name(), strings.Join(missing, ", "))
	}
	return true, ""
}

// Ensure starts workers for the demands it can serve, counting workers
// already starting, up to MaxWorkers; it returns the demands it can never
// serve, with the reason.
func (pl *Pool) Ensure(ctx context.Context, demands []Demand) (unservable []Demand) {
	pl.reap(ctx)
	pl.mu.Lock()
	starting := map[string]int{} // by image
	for id, w := range pl.workers {
		if !pl.connected(id) && time.Since(w.at) < pl.cfg.StartTTL {
			starting[w.image]++
		}
	}
	room := pl.cfg.MaxWorkers - len(pl.workers)
	pl.mu.Unlock()
	for _, d := range demands {
		if ok, why := pl.CanServe(d.Image, d.Labels); !ok {
			d.Reason = why
			unservable = append(unservable, d)
			continue
		}
		n := min(len(d.Jobs)-starting[d.Image], room)
		starting[d.Image] = max(starting[d.Image]-len(d.Jobs), 0)
		for i := 0; i < n; i++ {
			if err := pl.start(ctx, d.Image); err != nil {
				pl.log.Error("provision worker", "provider", pl.p.Name(), "err", err)
				return unservable
			}
			room--
		}
	}
	return unservable
}

func (pl *Pool) start(ctx context.Context, image string) error {
	id, token, err := pl.reg.NewWorker(ctx, pl.p.Name(), image, pl.cfg.Labels, pl.cfg.StartTTL)
	if err != nil {
		return err
	}
	h, err := pl.p.Provision(ctx, id, token, Spec{Image: image, Labels: pl.cfg.Labels})
	if err != nil {
		return err
	}
	pl.mu.Lock()
	pl.workers[id] = started{at: time.Now(), image: image}
	pl.handles[id] = h
	pl.mu.Unlock()
	pl.log.Info("worker provisioned", "provider", pl.p.Name(), "worker_id", id)
	return pl.reg.WorkerProvisioned(ctx, id, pl.p.Name(), image, h)
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
