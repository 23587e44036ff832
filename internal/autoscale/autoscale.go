// Package autoscale decides how many workers each provider runs. It runs
// on the leader only (scheduler.Leader):
//
//   - Scale-up reacts to events (JobCreated, JobQueueDepthChanged, worker
//     and provider changes): ready jobs that no connected worker has room
//     for are grouped by what they need (image, labels); workers already
//     starting count against that demand; the rest is asked of the first
//     enabled, healthy provider that can run it, up to its max_workers.
//     Demand nothing configured can serve gets JobSchedulingFailed once.
//   - Scale-down removes workers idle longer than their provider's idle
//     timeout. A worker is drained in the database before it is stopped,
//     which waits for claims in flight, so a busy worker is never removed.
//   - At the start of a term, workers a provider runs that the database
//     no longer knows (orphans of an earlier server) are terminated.
//
// The health monitor (health.go) keeps each provider's health; the
// autoscaler and the dispatcher skip unhealthy providers.
package autoscale

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// Config configures the autoscaler and the health monitor.
type Config struct {
	// StartTTL is how long a started worker may take to connect before it
	// is terminated as failed (default 30s).
	StartTTL time.Duration
	// HealthInterval is the time between health checks of a provider
	// (default 30s); HealthTimeout bounds one check (default 5s).
	HealthInterval, HealthTimeout time.Duration
	// DisconnectLimit unexpected WorkerDisconnected of one provider within
	// DisconnectWindow mark it unhealthy (defaults 5 and 1m).
	DisconnectLimit  int
	DisconnectWindow time.Duration
	Logger           *slog.Logger
	Registry         prometheus.Registerer // nil = no metrics
}

// Autoscaler owns the providers on the leader.
type Autoscaler struct {
	cfg       Config
	store     *store.Store
	bus       *eventbus.Bus
	providers map[string]provider.Provider
	log       *slog.Logger
	m         *metrics

	mu       sync.Mutex
	reported map[string]bool // jobs given JobSchedulingFailed this term
	kick     chan struct{}

	// kindsDue is when a pass may read the ready jobs' kinds again (the
	// pass's goroutine only).
	kindsDue time.Time
}

// readPage is how many ready jobs a pass reads, in dispatch order. When
// that many are ready, jobs past them are demand too: the pass then reads
// every ready job's kind (ReadyKinds), at most once a second and at most
// a twentieth of the time, so that a backlog nobody can serve does not
// hide a job behind it that a provider could serve.
const readPage = 1000

// snapshot is what one pass decides on, read in one snapshot.
type snapshot struct {
	provs     []store.Provider
	live      map[string][]store.ProviderWorker
	ready     []db.ReadyJobsRow
	kinds     []db.ReadyKindsRow // nil unless the ready page was full and the kinds were due
	connected []store.Worker
}

// New returns an autoscaler over the given providers (by name).
func New(cfg Config, st *store.Store, bus *eventbus.Bus, providers []provider.Provider) *Autoscaler {
	if cfg.StartTTL <= 0 {
		cfg.StartTTL = 30 * time.Second
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 30 * time.Second
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 5 * time.Second
	}
	if cfg.DisconnectLimit <= 0 {
		cfg.DisconnectLimit = 5
	}
	if cfg.DisconnectWindow <= 0 {
		cfg.DisconnectWindow = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Autoscaler{cfg: cfg, store: st, bus: bus, providers: map[string]provider.Provider{}, log: cfg.Logger,
		m: newMetrics(cfg.Registry), reported: map[string]bool{}, kick: make(chan struct{}, 1)}
	for _, p := range providers {
		a.providers[p.Name()] = p
	}
	return a
}

// scaleTriggers are the events after which demand or capacity may differ.
var scaleTriggers = []string{"JobCreated", "JobQueueDepthChanged", "JobRetryScheduled", "WorkerRegistered", "WorkerDisconnected",
	"WorkerTerminated", "JobCompleted", "JobFailed", "JobCancelled", "ProviderHealthChanged"}

// Run is the leader duty: reconcile orphans, then scale on events, with a
// timer for idle timeouts and start deadlines.
func (a *Autoscaler) Run(ctx context.Context) error {
	from, err := a.bus.Now(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	clear(a.reported)
	a.mu.Unlock()
	a.reconcileOrphans(ctx)
	// Providers that report worker deaths (Docker, Kubernetes) end those workers at
	// once instead of after the lease.
	for _, p := range a.providers {
		if w, ok := p.(watcher); ok {
			go func() {
				if err := w.Events(ctx, func(id string) { a.died(ctx, id) }); err != nil && ctx.Err() == nil {
					a.log.Warn("provider events", "provider", p.Name(), "err", err)
				}
			}()
		}
	}
	tail := a.bus.Watch(ctx, from, eventbus.Filter{Types: scaleTriggers, Lazy: true, Consumer: "autoscaler"}, func(eventbus.Event) error {
		a.Kick()
		return nil
	})
	a.Kick()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case err := <-tail:
			if err != nil {
				return fmt.Errorf("autoscaler triggers: %w", err)
			}
			return nil
		case <-a.kick:
		case <-timer.C:
		}
		next, err := a.pass(ctx)
		if err != nil && ctx.Err() == nil {
			a.log.Warn("autoscaler pass", "err", err)
			next = time.Second
		}
		timer.Reset(next)
	}
}

// watcher is a provider that reports its workers' deaths.
type watcher interface {
	Events(ctx context.Context, died func(workerID string)) error
}

// died handles the death of a worker's container or pod: a worker that
// was still working fails its attempts now (worker_lost) instead of after
// the lease; in every case what is left of it is removed.
func (a *Autoscaler) died(ctx context.Context, id string) {
	w, err := a.store.GetWorker(ctx, id)
	if err != nil {
		return
	}
	if w.State != "terminated" && w.State != "disconnected" {
		if _, err := a.store.WorkerDied(ctx, id, "its container or pod died"); err != nil {
			a.log.Warn("record dead worker", "worker_id", id, "err", err)
		}
	}
	if impl := a.providers[w.Provider]; impl != nil && len(w.Handle) > 0 {
		if err := impl.Terminate(ctx, w.Handle); err != nil {
			a.log.Warn("remove dead worker", "worker_id", id, "err", err)
		}
	}
	a.Kick()
}

// Kick asks for a pass.
func (a *Autoscaler) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// need is unmet demand of one kind.
type need struct {
	image  string
	labels map[string]string
	// cpuMillis and memoryMiB are the jobs' resources: the limits of the
	// workers started for them, where the provider enforces limits.
	cpuMillis, memoryMiB int64
	jobs                 []string // the jobs of the first page of ready ones
	beyond               int      // more jobs of this kind, past that page
}

func (n need) count() int { return len(n.jobs) + n.beyond }

// read reads what a pass decides on. Everything comes from one snapshot:
// read one by one, a job could look unserved because the worker that
// just took it (and drained, being ephemeral) is read after the queue.
func (a *Autoscaler) read(ctx context.Context, now time.Time) (snapshot, error) {
	sn := snapshot{live: map[string][]store.ProviderWorker{}}
	err := a.store.ReadSnapshot(ctx, func(st *store.Store) error {
		var err error
		if sn.provs, err = st.ListProviders(ctx); err != nil {
			return err
		}
		for _, p := range sn.provs {
			if sn.live[p.Name], err = st.ProviderWorkers(ctx, p.Name); err != nil {
				return err
			}
		}
		if sn.ready, err = st.ReadyJobs(ctx, now, readPage); err != nil {
			return err
		}
		if len(sn.ready) == readPage && !time.Now().Before(a.kindsDue) {
			t0 := time.Now()
			if sn.kinds, err = st.ReadyKinds(ctx, now); err != nil {
				return err
			}
			a.kindsDue = time.Now().Add(max(20*time.Since(t0), time.Second))
		}
		sn.connected, err = st.WorkerLoad(ctx)
		return err
	})
	return sn, err
}

// pass scales up and down once and returns when it wants to look again
// (the next idle timeout or start deadline).
func (a *Autoscaler) pass(ctx context.Context) (time.Duration, error) {
	now := a.store.Now()
	sn, err := a.read(ctx, now)
	if err != nil {
		return 0, err
	}
	provs, live := sn.provs, sn.live
	next := time.Hour
	if len(sn.ready) == readPage && sn.kinds == nil {
		next = time.Until(a.kindsDue) // look past the page once the kinds are due
	}
	for _, p := range provs {
		if d, err := a.scaleDown(ctx, p, live[p.Name], now); err != nil {
			return 0, err
		} else {
			next = min(next, d)
		}
	}
	needs := demand(sn.ready, sn.kinds, sn.connected, live)
	// A job in retry backoff becomes demand when its run_at comes.
	if at, err := a.store.NextRunAt(ctx, now); err != nil {
		return 0, err
	} else if d := at.Sub(now); d < next {
		next = d
	}
	for _, n := range needs {
		left := n.count()
		reason := "no provider is configured"
		order := provs
		if n.image == "" { // any worker will do: prefer providers without images (cheaper)
			order = slices.Clone(provs)
			slices.SortStableFunc(order, func(x, y store.Provider) int { return cmpBool(x.AnyImage, y.AnyImage) })
		}
		for _, p := range order {
			if left == 0 {
				break
			}
			impl := a.providers[p.Name]
			ok, why := p.CanServe(n.image, n.labels)
			switch {
			case impl == nil:
				ok, why = false, fmt.Sprintf("provider %s is not available on this server", p.Name)
			case !p.Enabled:
				ok, why = false, fmt.Sprintf("provider %s is disabled", p.Name)
			case !p.Healthy:
				ok, why = false, fmt.Sprintf("provider %s is unhealthy since %s: %s", p.Name, p.UnhealthySince.UTC().Format(time.RFC3339), p.HealthMessage)
			}
			if !ok {
				reason = why
				continue
			}
			room := p.MaxWorkers - len(live[p.Name])
			if room <= 0 {
				reason = "" // it can, once it has room: not a scheduling failure
				continue
			}
			k := min(left, room)
			started := a.provision(ctx, impl, p, n, k)
			live[p.Name] = append(live[p.Name], make([]store.ProviderWorker, started)...)
			left -= started
			reason = ""
		}
		if left > 0 && reason != "" {
			a.reportUnservable(ctx, n.jobs[max(len(n.jobs)-left, 0):], reason)
		}
	}
	return max(next, 100*time.Millisecond), nil
}

// kindKey names what a job needs: image, labels, CPU and memory.
func kindKey(image string, labels []byte, cpuMillis, memoryMiB int64) string {
	return fmt.Sprintf("%s\x00%s\x00%d\x00%d", image, labels, cpuMillis, memoryMiB)
}

// demand returns the ready jobs no connected worker has room for, minus
// what starting workers will take, grouped by what they need: the jobs
// of the first page one by one (rows), then the other jobs of each kind
// (kinds, nil when not read).
func demand(rows []db.ReadyJobsRow, kinds []db.ReadyKindsRow, workers []store.Worker, live map[string][]store.ProviderWorker) []need {
	if len(rows) == 0 {
		return nil
	}
	free := make([]int, len(workers))
	for i, w := range workers {
		free[i] = max(w.Slots-w.Running, 0)
	}
	// Workers still starting take the demand of their kind.
	var starting []store.ProviderWorker
	for _, ws := range live {
		for _, w := range ws {
			if w.State == "provisioning" {
				starting = append(starting, w)
			}
		}
	}
	startFree := make([]int, len(starting))
	for i, w := range starting {
		startFree[i] = w.Slots
	}
	// absorb takes n jobs of a kind from the free slots of the workers
	// that can run them, connected ones first, and returns how many are left.
	absorb := func(image string, labels map[string]string, cpuMillis, memoryMiB int64, n int) int {
		for i, w := range workers {
			if n > 0 && free[i] > 0 && job.MatchedBy(image, labels, w.Image, w.Labels) && job.Fits(cpuMillis, memoryMiB, w.CPUMillis, w.MemoryMiB) {
				take := min(n, free[i])
				free[i], n = free[i]-take, n-take
			}
		}
		for i, w := range starting {
			if n > 0 && startFree[i] > 0 && job.MatchedBy(image, labels, w.Image, w.Labels) {
				take := min(n, startFree[i])
				startFree[i], n = startFree[i]-take, n-take
			}
		}
		return n
	}
	byKey := map[string]*need{}
	var order []string
	needOf := func(key, image string, labels map[string]string, cpuMillis, memoryMiB int64) *need {
		if byKey[key] == nil {
			byKey[key] = &need{image: image, labels: labels, cpuMillis: cpuMillis, memoryMiB: memoryMiB}
			order = append(order, key)
		}
		return byKey[key]
	}
	inPage := map[string]int{}
	for _, r := range rows {
		key := kindKey(r.Image, r.Labels, r.CpuMillis, r.MemoryMib)
		inPage[key]++
		var labels map[string]string
		_ = json.Unmarshal(r.Labels, &labels)
		if absorb(r.Image, labels, r.CpuMillis, r.MemoryMib, 1) > 0 {
			n := needOf(key, r.Image, labels, r.CpuMillis, r.MemoryMib)
			n.jobs = append(n.jobs, r.JobID.String())
		}
	}
	// Past the page: each kind's jobs not in it, many at a time.
	for _, k := range kinds {
		key := kindKey(k.Image, k.Labels, k.CpuMillis, k.MemoryMib)
		var labels map[string]string
		_ = json.Unmarshal(k.Labels, &labels)
		if left := absorb(k.Image, labels, k.CpuMillis, k.MemoryMib, int(k.N)-inPage[key]); left > 0 {
			needOf(key, k.Image, labels, k.CpuMillis, k.MemoryMib).beyond += left
		}
	}
	out := make([]need, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out
}

// provision starts up to k workers of provider p for need n and returns
// how many started.
func (a *Autoscaler) provision(ctx context.Context, impl provider.Provider, p store.Provider, n need, k int) int {
	if err := a.store.PublishEvents(ctx, eventbus.New("provider", p.Name, &hodeiv1.AutoScalingTriggered{Provider: p.Name, Requested: int32(k),
		Image: n.image, Labels: n.labels, Demand: int64(n.count())})); err != nil {
		a.log.Warn("autoscaler", "err", err)
	}
	started := 0
	for i := 0; i < k; i++ {
		id, token, err := a.store.NewWorker(ctx, p.Name, n.image, p.Labels, a.cfg.StartTTL)
		if err != nil {
			a.log.Error("register worker", "provider", p.Name, "err", err)
			return started
		}
		t0 := time.Now()
		h, err := impl.Provision(ctx, id, token, provider.Spec{Image: n.image, Labels: p.Labels, Ephemeral: p.Ephemeral,
			CPUMillis: n.cpuMillis, MemoryMiB: n.memoryMiB})
		if err != nil {
			a.m.provisionFailed(p.Name)
			a.log.Error("provision worker", "provider", p.Name, "worker_id", id, "err", err)
			if _, gerr := a.store.WorkerGone(ctx, id, "terminated", "provisioning failed: "+err.Error(), true); gerr != nil {
				a.log.Warn("record failed worker", "err", gerr)
			}
			return started
		}
		a.m.provisioned(p.Name, time.Since(t0))
		if err := a.store.WorkerProvisioned(ctx, id, p.Name, n.image, h); err != nil {
			a.log.Warn("record provisioned worker", "err", err)
		}
		a.log.Info("worker provisioned", "provider", p.Name, "worker_id", id, "image", n.image)
		started++
	}
	return started
}

// scaleDown terminates workers idle past the idle timeout (at once for
// ephemeral providers, after their one job) and workers that did not
// connect within StartTTL; it returns when to look again.
func (a *Autoscaler) scaleDown(ctx context.Context, p store.Provider, ws []store.ProviderWorker, now time.Time) (time.Duration, error) {
	impl := a.providers[p.Name]
	next := time.Hour
	if impl == nil {
		return next, nil
	}
	for _, w := range ws {
		switch w.State {
		case "provisioning":
			if left := w.CreatedAt.Add(a.cfg.StartTTL).Sub(now); left > 0 {
				next = min(next, left)
				continue
			}
			a.terminate(ctx, impl, p, w, "did not connect within "+a.cfg.StartTTL.String())
		case "disconnected":
			// Its lease expired (its attempts were failed): whatever still
			// runs of it is an orphan.
			a.terminate(ctx, impl, p, w, "lost: silent past its lease")
		case "connected":
			if w.Running > 0 {
				continue
			}
			idle := p.IdleTimeout
			if p.Ephemeral && w.Attempts > 0 {
				idle = 0
			}
			if left := w.IdleSince.Add(idle).Sub(now); left > 0 {
				next = min(next, left)
				continue
			}
			ok, err := a.store.DrainIfIdle(ctx, w.ID)
			if err != nil {
				return next, err
			}
			if ok {
				a.terminate(ctx, impl, p, w, "idle")
			}
		}
	}
	return next, nil
}

func (a *Autoscaler) terminate(ctx context.Context, impl provider.Provider, p store.Provider, w store.ProviderWorker, reason string) {
	a.log.Info("terminating worker", "provider", p.Name, "worker_id", w.ID, "reason", reason)
	if len(w.Handle) > 0 {
		if err := impl.Terminate(ctx, w.Handle); err != nil {
			a.log.Warn("terminate worker", "worker_id", w.ID, "err", err)
		}
	}
	if err := a.store.WorkerTerminated(ctx, w.ID, p.Name, reason); err != nil {
		a.log.Warn("record terminated worker", "worker_id", w.ID, "err", err)
	}
	a.m.terminated(p.Name)
}

// reconcileOrphans terminates what providers run for workers the
// database considers gone (or never knew): leftovers of an earlier server.
func (a *Autoscaler) reconcileOrphans(ctx context.Context) {
	for name, impl := range a.providers {
		ws, err := a.store.ProviderWorkers(ctx, name)
		if err != nil {
			a.log.Warn("reconcile", "provider", name, "err", err)
			continue
		}
		known := map[string]bool{}
		for _, w := range ws {
			known[w.ID] = w.State != "disconnected"
		}
		insts, err := impl.List(ctx)
		if err != nil {
			a.log.Warn("reconcile: list", "provider", name, "err", err)
			continue
		}
		for _, in := range insts {
			if known[in.WorkerID] {
				continue
			}
			a.log.Info("terminating orphan worker", "provider", name, "worker_id", in.WorkerID)
			if err := impl.Terminate(ctx, in.Handle); err != nil {
				a.log.Warn("terminate orphan", "worker_id", in.WorkerID, "err", err)
			}
		}
	}
}

func (a *Autoscaler) reportUnservable(ctx context.Context, jobs []string, reason string) {
	a.mu.Lock()
	var events []eventbus.Event
	for _, id := range jobs {
		if !a.reported[id] {
			a.reported[id] = true
			events = append(events, eventbus.New("job", id, &hodeiv1.JobSchedulingFailed{JobId: id, Reason: reason}))
		}
	}
	if len(a.reported) > 100_000 {
		clear(a.reported)
	}
	a.mu.Unlock()
	if len(events) == 0 {
		return
	}
	if err := a.store.PublishEvents(ctx, events...); err != nil {
		a.log.Warn("report unschedulable jobs", "err", err)
		return
	}
	a.log.Warn("jobs cannot be scheduled", "jobs", len(events), "reason", reason)
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}
