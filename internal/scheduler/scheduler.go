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
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/server"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// Workers is this replica's set of connected workers.
type Workers interface {
	Free() []server.Slot
	Deliver(workerID string, as []store.Assignment) []store.Assignment
	OnCapacity(func())
}

// Provisioner starts workers when ready jobs found none.
type Provisioner interface {
	// Ensure asks for workers for the demands and returns those that no
	// provider can ever serve, with the reason.
	Ensure(ctx context.Context, demands []provider.Demand) (unservable []provider.Demand)
}

// Config configures the dispatcher.
type Config struct {
	// SafetySweep runs a pass this often without a wake-up; default 30s,
	// negative disables it.
	SafetySweep time.Duration
	Logger      *slog.Logger
	Metrics     *Metrics // nil = none
}

// Dispatcher is the JobController of one replica.
type Dispatcher struct {
	cfg   Config
	store *store.Store
	bus   *eventbus.Bus
	ws    Workers
	prov  Provisioner
	log   *slog.Logger
	kick  chan struct{}

	// reported holds jobs already given a JobSchedulingFailed, so that a
	// job waiting for a long time is reported once per replica.
	reported map[string]bool
}

// New returns a dispatcher; prov may be nil.
func New(cfg Config, st *store.Store, bus *eventbus.Bus, ws Workers, prov Provisioner) *Dispatcher {
	if cfg.SafetySweep == 0 {
		cfg.SafetySweep = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{cfg: cfg, store: st, bus: bus, ws: ws, prov: prov, log: cfg.Logger, kick: make(chan struct{}, 1), reported: map[string]bool{}}
	ws.OnCapacity(d.Kick)
	return d
}

// Kick asks for a dispatch pass.
func (d *Dispatcher) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// triggers are the events that can make a job dispatchable.
var triggers = []string{"JobCreated", "WorkerRegistered", "WorkerProvisioned", "WorkerReconnected", "JobRetryScheduled"}

// Run dispatches until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The position is taken before the first pass: a job created after
	// the pass read the queue is announced by an event after it.
	from, err := d.bus.Now(ctx)
	if err != nil {
		return fmt.Errorf("dispatch: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		errc <- d.bus.TailFrom(ctx, from, eventbus.Filter{Types: triggers}, func(eventbus.Event) error {
			d.Kick()
			return nil
		})
	}()
	var sweep <-chan time.Time
	if d.cfg.SafetySweep > 0 {
		t := time.NewTicker(d.cfg.SafetySweep)
		defer t.Stop()
		sweep = t.C
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	d.Kick()
	for {
		var trigger string
		select {
		case <-ctx.Done():
			<-errc
			return nil
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dispatch triggers: %w", err)
		case <-d.kick:
			trigger = "event"
		case <-sweep:
			trigger = "sweep"
		case <-timer.C:
			trigger = "timer"
		}
		next, err := d.pass(ctx, trigger)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.Error("dispatch pass", "err", err)
			next = time.Now().Add(time.Second)
		}
		timer.Reset(max(time.Until(next), 0))
	}
}

// pass claims jobs for every worker with free slots until nothing more
// matches, asks for workers if ready jobs remain, and returns when the
// next delayed job becomes ready.
func (d *Dispatcher) pass(ctx context.Context, trigger string) (time.Time, error) {
	now := d.store.Now()
	claimed := 0
	for {
		n, err := d.claimAll(ctx)
		claimed += n
		if err != nil {
			return now, err
		}
		if n == 0 {
			break
		}
	}
	d.cfg.Metrics.pass(trigger, claimed)
	// Ready jobs that no worker here took may need a new worker.
	if err := d.provision(ctx, now); err != nil {
		return now, err
	}
	return d.store.Q.NextRunAt(ctx, now)
}

// claimAll claims jobs for every worker with free slots and returns how
// many it claimed.
func (d *Dispatcher) claimAll(ctx context.Context) (claimed int, err error) {
	for _, slot := range d.ws.Free() {
		as, err := d.store.Claim(ctx, slot.Worker, slot.Free)
		if err != nil {
			return claimed, err
		}
		claimed += len(as)
		now := time.Now()
		for _, a := range as {
			if a.Attempt == 1 {
				d.cfg.Metrics.assigned(now.Sub(a.CreatedAt).Seconds())
			}
		}
		for _, a := range d.ws.Deliver(slot.Worker.ID, as) {
			// The worker vanished between claim and send.
			if _, err := d.store.FinishAttempt(ctx, a.Token, store.Result{ExitCode: -1, Class: job.FailureWorkerLost, Message: "worker gone before the job was sent"}); err != nil {
				d.log.Error("undeliverable attempt", "job_id", a.JobID, "err", err)
			}
		}
	}
	return claimed, nil
}

// provision groups the ready jobs that found no worker by what they need,
// asks the provisioner for workers, and reports jobs that nothing
// configured can ever run (JobSchedulingFailed; they stay queued).
func (d *Dispatcher) provision(ctx context.Context, now time.Time) error {
	if d.prov == nil {
		return nil
	}
	rows, err := d.store.Q.ReadyJobs(ctx, db.ReadyJobsParams{Now: now, MaxRows: 1000})
	if err != nil || len(rows) == 0 {
		return err
	}
	workers, err := d.store.WorkerLoad(ctx)
	if err != nil {
		return err
	}
	byNeed := map[string]*provider.Demand{}
	var demands []provider.Demand
	var order []string
	for _, r := range rows {
		var labels map[string]string
		_ = json.Unmarshal(r.Labels, &labels)
		if anyMatch(workers, r.Image, labels) {
			continue // a connected worker can run it: it waits for capacity
		}
		key := r.Image + "\x00" + string(r.Labels)
		if byNeed[key] == nil {
			byNeed[key] = &provider.Demand{Image: r.Image, Labels: labels}
			order = append(order, key)
		}
		byNeed[key].Jobs = append(byNeed[key].Jobs, r.JobID.String())
	}
	for _, k := range order {
		demands = append(demands, *byNeed[k])
	}
	if len(demands) == 0 {
		return nil
	}
	for _, u := range d.prov.Ensure(ctx, demands) {
		var events []eventbus.Event
		for _, id := range u.Jobs {
			if d.reported[id] {
				continue
			}
			if len(d.reported) > 100_000 {
				clear(d.reported)
			}
			d.reported[id] = true
			events = append(events, eventbus.New("job", id, &hodeiv1.JobSchedulingFailed{JobId: id, Reason: u.Reason}))
		}
		if len(events) > 0 {
			if err := d.store.PublishEvents(ctx, events...); err != nil {
				return err
			}
			d.log.Warn("jobs cannot be scheduled", "jobs", len(events), "reason", u.Reason)
		}
	}
	return nil
}

// anyMatch reports whether a connected worker can run the job.
func anyMatch(workers []store.Worker, image string, labels map[string]string) bool {
	for _, w := range workers {
		if job.MatchedBy(image, labels, w.Image, w.Labels) {
			return true
		}
	}
	return false
}
