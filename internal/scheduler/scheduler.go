// Package scheduler is the JobController: it dispatches queued jobs to
// the workers connected to this replica, woken by events (JobCreated,
// WorkerRegistered, WorkerProvisioned, WorkerReconnected,
// JobRetryScheduled) and by freed slots, never by a polling loop. Delayed
// work (retry backoff) wakes a timer at the earliest run_at. A slow safety
// sweep only covers missed wake-ups and can be disabled.
//
// Passes run one at a time per replica; claims use FOR UPDATE SKIP LOCKED,
// so replicas never take the same job.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/tracing"
)

// Config configures the dispatcher.
type Config struct {
	// SafetySweep runs a pass this often without a wake-up; default 30s,
	// negative disables it.
	SafetySweep time.Duration
	Logger      *slog.Logger
	Metrics     *Metrics        // nil = none
	Tracer      *tracing.Tracer // nil = no spans
}

// Workers is what the dispatcher needs of the workers connected to its
// replica (the server's WorkerSet).
type Workers interface {
	// Free lists the connected workers with room for more attempts.
	Free() []store.Slot
	// Deliver sends claimed attempts to their worker and returns those it
	// could not send (the worker is gone).
	Deliver(workerID string, as []store.Assignment) []store.Assignment
	// Capacity receives when a pass may claim something: a worker
	// connected, a slot freed up, or this replica created jobs.
	Capacity() <-chan struct{}
}

// Dispatcher is the JobController of one replica.
type Dispatcher struct {
	cfg   Config
	store *store.Store
	bus   *eventbus.Bus
	ws    Workers // this replica's connected workers
	log   *slog.Logger
	kick  chan struct{}
	// recheck asks for a check of the claim cursors against the first
	// ready job of each kind of worker (rechecking).
	recheck chan struct{}

	mu        sync.Mutex
	unhealthy map[string]bool // providers whose workers get no jobs

	cursors cursors
	retries *pendingRetries
	// due asks for a pass when retries came due and moved cursors back.
	due chan struct{}
}

// noRetry stands for "no delayed retry".
var noRetry = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// retryScheduled notes the retry JobRetryScheduled e announces, for its
// run_at (pendingRetries). One it cannot read makes the dispatcher read
// every delayed retry from the store again and check its cursors.
func (d *Dispatcher) retryScheduled(e eventbus.Event) {
	p, err := e.Decode()
	var id uuid.UUID
	if err == nil {
		id, err = uuid.Parse(p.GetJobRetryScheduled().GetJobId())
	}
	if err != nil || p.GetJobRetryScheduled().GetRunAt() == nil {
		d.retries.reload()
		d.askRecheck() // in case its run_at has come already
		return
	}
	d.retries.add(id, p.GetJobRetryScheduled().GetRunAt().AsTime())
}

// New returns a dispatcher.
func New(cfg Config, st *store.Store, bus *eventbus.Bus, ws Workers) *Dispatcher {
	if cfg.SafetySweep == 0 {
		cfg.SafetySweep = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Dispatcher{cfg: cfg, store: st, bus: bus, ws: ws, log: cfg.Logger, kick: make(chan struct{}, 1), recheck: make(chan struct{}, 1), unhealthy: map[string]bool{},
		cursors: cursors{at: map[string]*cursor{}}, retries: newPendingRetries(), due: make(chan struct{}, 1)}
}

// Kick asks for a dispatch pass.
func (d *Dispatcher) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// JobsCreated tells the dispatcher of jobs its own replica just created,
// before their JobCreated events come through the log (which can lag
// behind a large submission), so that its claim cursors move back for
// them at once.
func (d *Dispatcher) JobsCreated(js []job.Job) {
	for _, j := range js {
		id, err := uuid.Parse(j.ID)
		if err != nil {
			d.cursors.reset()
			continue
		}
		d.cursors.ready(store.Cursor{Priority: j.Spec.Priority, ID: id}, j.Spec.Labels, j.Spec.Image)
	}
}

func (d *Dispatcher) askRecheck() {
	select {
	case d.recheck <- struct{}{}:
	default:
	}
}

// rechecking moves the claim cursors back, beside the passes, so that a
// read that walks a long backlog delays no claim, until ctx ends: for
// each retry when its run_at comes (placeDueRetries), and, when asked
// (the safety sweep, an event it could not read), each cursor to the
// first job its workers can run now when that job is before it.
func (d *Dispatcher) rechecking(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.recheck:
			d.recheckAll(ctx)
		case <-d.retries.wake:
		case <-timer.C:
		}
		if err := d.loadDelayed(ctx); err != nil {
			if ctx.Err() == nil {
				d.log.Error("load delayed retries", "err", err)
			}
			timer.Reset(time.Second)
			continue
		}
		next := d.placeDueRetries(ctx)
		timer.Reset(max(time.Until(next), 0))
	}
}

// recheckAll moves each claim cursor back to the first job its workers
// can run now when that job is before it.
func (d *Dispatcher) recheckAll(ctx context.Context) {
	moved := false
	for key, like := range d.cursors.set() {
		first, err := d.store.FirstReady(ctx, like)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("recheck claim cursor", "err", err)
				d.cursors.reset()
				moved = true
			}
			break
		}
		if first != nil && d.cursors.lowerTo(key, *first) {
			moved = true
		}
	}
	if moved {
		d.Kick()
	}
}

// triggers are the events that can make a job dispatchable.
var triggers = []string{"JobCreated", "WorkerRegistered", "WorkerProvisioned", "WorkerReconnected", "JobRetryScheduled", "ProviderHealthChanged"}

// Run dispatches until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	// The position is taken before the first pass: a job created after
	// the pass read the queue is announced by an event after it.
	from, err := d.bus.Now(ctx)
	if err != nil {
		return fmt.Errorf("dispatch: %w", err)
	}
	provs, err := d.store.ListProviders(ctx)
	if err != nil {
		return fmt.Errorf("dispatch: %w", err)
	}
	d.mu.Lock()
	for _, p := range provs {
		d.unhealthy[p.Name] = !p.Healthy
	}
	d.mu.Unlock()
	tail := d.bus.Watch(ctx, from, eventbus.Filter{Types: triggers, Lazy: true, Consumer: "dispatcher"}, func(e eventbus.Event) error {
		switch e.Type {
		case "JobCreated":
			p, err := e.Decode()
			if err != nil {
				d.cursors.reset()
				break
			}
			c := p.GetJobCreated()
			id, err := uuid.Parse(c.GetJobId())
			if err != nil {
				d.cursors.reset()
				break
			}
			d.cursors.ready(store.Cursor{Priority: c.GetPriority(), ID: id}, c.GetLabels(), c.GetImage())
		case "JobRetryScheduled":
			d.retryScheduled(e)
		case "ProviderHealthChanged":
			p, err := e.Decode()
			if err != nil {
				return err
			}
			h := p.GetProviderHealthChanged()
			d.mu.Lock()
			d.unhealthy[h.Provider] = !h.Healthy
			d.mu.Unlock()
		}
		d.Kick()
		return nil
	})
	var sweep <-chan time.Time
	if d.cfg.SafetySweep > 0 {
		t := time.NewTicker(d.cfg.SafetySweep)
		defer t.Stop()
		sweep = t.C
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	rctx, stopRecheck := context.WithCancel(ctx)
	defer stopRecheck()
	wg.Go(func() { d.rechecking(rctx) })
	d.Kick()
	for {
		var trigger string
		select {
		case err := <-tail:
			if err != nil {
				return fmt.Errorf("dispatch triggers: %w", err)
			}
			return nil
		case <-d.kick:
			trigger = "event"
		case <-d.ws.Capacity():
			trigger = "event"
		case <-sweep:
			trigger = "sweep"
			d.askRecheck() // whatever a claim skipped while it was locked
		case <-d.due:
			trigger = "timer"
		case <-timer.C:
			trigger = "timer"
		}
		if err := d.pass(ctx, trigger); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.Error("dispatch pass", "err", err)
			d.cursors.reset()
			d.cfg.Metrics.passFailed()
			timer.Reset(time.Second)
		}
	}
}

// pass claims jobs for every worker with free slots until nothing more
// matches.
func (d *Dispatcher) pass(ctx context.Context, trigger string) error {
	claimed := 0
	for {
		n, err := d.claimAll(ctx)
		claimed += n
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	d.cfg.Metrics.pass(trigger, claimed)
	return nil
}

// claimAll claims jobs for every worker with free slots, one statement
// per kind of worker (same labels and image), and returns how many it
// claimed.
func (d *Dispatcher) claimAll(ctx context.Context) (claimed int, err error) {
	type group struct {
		like store.WorkerMatch
		free []store.Slot
	}
	groups := map[string]*group{}
	var order []string
	for _, slot := range d.ws.Free() {
		d.mu.Lock()
		sick := d.unhealthy[slot.Worker.Provider]
		d.mu.Unlock()
		if sick {
			continue // its provider is unhealthy: its workers wait
		}
		w := slot.Worker
		key := fmt.Sprintf("%s\x00%s\x00%d\x00%d", labelKey(w.Labels), w.Image, w.CPUMillis, w.MemoryMiB)
		if groups[key] == nil {
			groups[key] = &group{like: w}
			order = append(order, key)
		}
		groups[key].free = append(groups[key].free, slot)
	}
	for _, key := range order {
		g := groups[key]
		// Round-robin over the workers, so that jobs spread out.
		var slots []string
		for left := true; left; {
			left = false
			for i := range g.free {
				if g.free[i].Free > 0 {
					slots = append(slots, g.free[i].Worker.ID)
					g.free[i].Free--
					left = true
				}
			}
		}
		began := time.Now()
		from, epoch := d.cursors.get(key, g.like)
		as, next, err := d.store.ClaimSlots(ctx, g.like, slots, from)
		if err != nil {
			return claimed, err
		}
		d.cursors.advance(key, epoch, next)
		if d.cfg.Tracer.Enabled() {
			for _, a := range as {
				_, sp := d.cfg.Tracer.Span(tracing.Attempt(ctx, a.JobID, a.Attempt), "claim", began,
					attribute.String("hodei.job_id", a.JobID), attribute.String("hodei.worker_id", a.WorkerID))
				sp.End()
			}
		}
		claimed += len(as)
		now := time.Now()
		byWorker := map[string][]store.Assignment{}
		debug := d.log.Enabled(ctx, slog.LevelDebug)
		for _, a := range as {
			if a.Attempt == 1 {
				d.cfg.Metrics.assigned(now.Sub(a.CreatedAt).Seconds())
			}
			d.cfg.Metrics.waited(a.Spec.Type, now.Sub(a.ReadyAt).Seconds())
			if debug {
				d.log.Debug("job assigned", "job_id", a.JobID, "attempt", a.Attempt, "worker_id", a.WorkerID, "type", a.Spec.Type)
			}
			byWorker[a.WorkerID] = append(byWorker[a.WorkerID], a)
		}
		for w, as := range byWorker {
			for _, a := range d.ws.Deliver(w, as) {
				// The worker vanished between claim and send.
				jobID, err := uuid.Parse(a.JobID)
				if err == nil {
					_, err = d.store.FinishAttempt(ctx, jobID, a.Token, store.Result{ExitCode: -1, Class: job.FailureWorkerLost, Message: "worker gone before the job was sent"})
				}
				if err != nil {
					d.log.Error("undeliverable attempt", "job_id", a.JobID, "attempt", a.Attempt, "worker_id", a.WorkerID, "err", err)
				}
			}
		}
	}
	return claimed, nil
}

// labelKey is a canonical form of a label set.
func labelKey(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + m[k] + "\x00")
	}
	return b.String()
}

// cursors are where the next claim for each kind of worker starts in
// dispatch order (store.Cursor): after the last job claimed for it, or at
// the end when a claim found nothing more it can run, so that claims walk
// neither again over the index entries of the jobs claimed before nor
// over a backlog these workers cannot run. A job created before a
// cursor, one these workers can run (ids are taken before commit, so
// commits come out of order; priorities jump ahead), moves that cursor
// back to just before it, also when it was created while a claim was
// under way. A retried job keeps its place: when its run_at comes, its
// place is read and moves back the cursors past it (pendingRetries). On
// each safety sweep (a job a claim skipped while another transaction
// held its row), each cursor is checked against the first job its
// workers can run now, found beside the passes (rechecking), and moved
// back before it when it is behind. A failed pass drops every cursor: the next claims
// start from the head. A drop starts a new epoch: a claim that began in
// an older one does not set its cursor. Claims run one at a time (the
// dispatcher's passes); the bus's goroutine and the recheck move cursors
// back concurrently.
type cursors struct {
	mu    sync.Mutex
	epoch uint64
	at    map[string]*cursor // by kind of worker (claimAll's key)
	// The claim under way: its kind of worker, and the first position
	// of a job it can run created since it began.
	claiming *cursor
	first    *store.Cursor
}

type cursor struct {
	like store.WorkerMatch
	at   *store.Cursor // nil: the head
}

// get returns where the claim for workers like these starts, and the
// epoch it starts in.
func (c *cursors) get(key string, like store.WorkerMatch) (*store.Cursor, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.at[key]
	if cur == nil {
		cur = &cursor{like: like}
		c.at[key] = cur
	}
	c.claiming, c.first = cur, nil
	return cur.at, c.epoch
}

// advance records where the claim that began in epoch stopped.
func (c *cursors) advance(key string, epoch uint64, next *store.Cursor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.at[key]
	c.claiming = nil
	if cur == nil || next == nil || epoch != c.epoch {
		return
	}
	n := *next
	if c.first != nil && !n.Before(*c.first) {
		n = c.first.JustBefore()
	}
	cur.at = &n
}

func (c *cursors) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for _, cur := range c.at {
		cur.at = nil
	}
}

// set lists the kinds of workers whose cursor is past the head.
func (c *cursors) set() map[string]store.WorkerMatch {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]store.WorkerMatch{}
	for key, cur := range c.at {
		if cur.at != nil {
			out[key] = cur.like
		}
	}
	return out
}

// lowerTo moves the cursor of key back to just before the job at pos, if
// it is past it, and reports whether it moved.
func (c *cursors) lowerTo(key string, pos store.Cursor) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.at[key]
	if cur == nil {
		return false
	}
	return c.behind(cur, pos)
}

// behind moves cur back to just before pos if it is past it, notes pos
// for the claim under way on cur, and reports whether cur moved.
func (c *cursors) behind(cur *cursor, pos store.Cursor) bool {
	if cur == c.claiming && (c.first == nil || pos.Before(*c.first)) {
		p := pos
		c.first = &p
	}
	if cur.at == nil || cur.at.Before(pos) {
		return false
	}
	b := pos.JustBefore()
	cur.at = &b
	return true
}

// ready moves back the cursors that are past a job created at pos with
// these labels and image, of the workers that can run it (as far as
// labels and image tell: resources are left out, which only moves a
// cursor back for nothing).
func (c *cursors) ready(pos store.Cursor, labels map[string]string, image string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cur := range c.at {
		if fits(labels, image, cur.like) {
			c.behind(cur, pos)
		}
	}
}

// fits reports whether a worker like w can run a job with these labels
// and image (hodei_job_fits without resources).
func fits(labels map[string]string, image string, w store.WorkerMatch) bool {
	if image != "" && image != w.Image {
		return false
	}
	for k, v := range labels {
		if got, ok := w.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
