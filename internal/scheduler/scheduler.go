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
	"time"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/server"
	"github.com/hodei-dev/hodei/internal/store"
)

// Workers is this replica's set of connected workers.
type Workers interface {
	Free() []server.Slot
	Deliver(workerID string, as []store.Assignment) []store.Assignment
	OnCapacity(func())
}

// Provisioner starts workers when ready jobs found none.
type Provisioner interface {
	// Ensure is told how many ready jobs are waiting for a worker.
	Ensure(ctx context.Context, waiting int)
}

// Config configures the dispatcher.
type Config struct {
	// SafetySweep runs a pass this often without a wake-up; default 30s,
	// negative disables it.
	SafetySweep time.Duration
	Logger      *slog.Logger
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
}

// New returns a dispatcher; prov may be nil.
func New(cfg Config, st *store.Store, bus *eventbus.Bus, ws Workers, prov Provisioner) *Dispatcher {
	if cfg.SafetySweep == 0 {
		cfg.SafetySweep = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{cfg: cfg, store: st, bus: bus, ws: ws, prov: prov, log: cfg.Logger, kick: make(chan struct{}, 1)}
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
	errc := make(chan error, 1)
	go func() {
		errc <- d.bus.Tail(ctx, 0, eventbus.Filter{Types: triggers}, func(eventbus.Event) error {
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
		case <-sweep:
		case <-timer.C:
		}
		next, err := d.pass(ctx)
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
func (d *Dispatcher) pass(ctx context.Context) (time.Time, error) {
	now := d.store.Now()
	for {
		stats, err := d.store.Q.QueueStats(ctx, now)
		if err != nil {
			return now, err
		}
		if stats.Ready == 0 {
			break
		}
		progress := false
		for _, slot := range d.ws.Free() {
			as, err := d.store.Claim(ctx, slot.Worker, slot.Free)
			if err != nil {
				return now, err
			}
			if len(as) == 0 {
				continue
			}
			progress = true
			for _, a := range d.ws.Deliver(slot.Worker.ID, as) {
				// The worker vanished between claim and send.
				if _, err := d.store.FinishAttempt(ctx, a.Token, store.Result{ExitCode: -1, Class: job.FailureWorkerLost, Message: "worker gone before the job was sent"}); err != nil {
					d.log.Error("undeliverable attempt", "job_id", a.JobID, "err", err)
				}
			}
		}
		if !progress {
			if d.prov != nil {
				d.prov.Ensure(ctx, int(stats.Ready))
			}
			break
		}
	}
	return d.store.Q.NextRunAt(ctx, now)
}
