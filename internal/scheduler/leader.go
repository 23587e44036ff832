package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/hodei-dev/hodei/internal/store"
)

// Advisory lock keys of the two leaderships: housekeeping (every replica
// campaigns) and scaling (only replicas that run providers campaign, so
// that the autoscaler always has providers to scale).
const (
	HousekeepingLock = 0x686f6465696c // "hodeil"
	ScalingLock      = 0x686f64656973 // "hodeis"
)

// Duty is a singleton task; it runs until ctx ends.
type Duty func(ctx context.Context) error

// Leader runs the singleton duties on the one replica that holds a
// PostgreSQL session-level advisory lock. The lock lives with the session:
// when the leader dies, PostgreSQL releases it and another replica takes
// over at its next try (every Retry).
type Leader struct {
	Store  *store.Store // whose database holds the lock
	Key    int64        // the advisory lock (HousekeepingLock, ScalingLock)
	Name   string
	Retry  time.Duration // how often a follower tries to take the lock; default 2s
	Logger *slog.Logger
	Duties []Duty
	// OnChange, if set, is told when this replica gains or loses leadership.
	OnChange func(leader bool)
}

// Run campaigns for leadership until ctx ends.
func (l *Leader) Run(ctx context.Context) error {
	retry := l.Retry
	if retry <= 0 {
		retry = 2 * time.Second
	}
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for {
		err := l.term(ctx, log)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			log.Warn("leadership", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

// term takes the lock if it is free and runs the duties while the session
// holding it is alive.
func (l *Leader) term(ctx context.Context, log *slog.Logger) error {
	c, err := l.Store.LockSession(ctx, l.Key)
	if err != nil || c == nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	log.Info("this replica is the leader", "leadership", l.Name)
	if l.OnChange != nil {
		l.OnChange(true)
		defer l.OnChange(false)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, d := range l.Duties {
		g.Go(func() error { return d(gctx) })
	}
	// Watch the session: if it dies, the lock is gone and so is leadership.
	g.Go(func() error {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				if err := c.Ping(gctx); err != nil && gctx.Err() == nil {
					return fmt.Errorf("leader session lost: %w", err)
				}
			}
		}
	})
	err = g.Wait()
	log.Info("leadership ended", "leadership", l.Name, "err", err)
	return err
}

// Reaper returns the duty that fails what silent workers left behind:
// attempts of workers unseen for the lease (their replica died) and
// started attempts past their timeout with no result. It runs every
// interval; it is a safety net for dead processes, not a dispatch path.
func Reaper(st *store.Store, lease, interval time.Duration, log *slog.Logger, after func()) Duty {
	return func(ctx context.Context) error {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			workers, err := st.ExpireSilentWorkers(ctx, st.Now().Add(-lease))
			if err != nil && ctx.Err() == nil {
				log.Warn("reaper: expire workers", "err", err)
			}
			n, err := st.FailOverdueAttempts(ctx, 2*lease)
			if err != nil && ctx.Err() == nil {
				log.Warn("reaper: overdue attempts", "err", err)
			}
			if len(workers) > 0 || n > 0 {
				log.Warn("reaper", "expired_workers", len(workers), "timed_out_attempts", n)
				if after != nil {
					after()
				}
			}
		}
	}
}

// retentionBatch is the number of jobs JobRetention deletes per
// transaction.
const retentionBatch = 1000

// retentionPause is how long JobRetention pauses after a batch, in
// multiples of the time the batch took: at most a tenth of one
// connection goes to deleting. Half of one (a pause as long as the
// batch) cost the hot path up to a third of its rate on two cores while
// a backlog was worked off; a tenth still deletes several thousand jobs
// a second.
const retentionPause = 9

// JobRetention returns the duty that deletes jobs that finished more than
// olderThan ago, with their attempts and logs: every interval, in batches
// of retentionBatch, oldest first, each batch followed by a pause of
// retentionPause times what it took, so that a large backlog of old jobs
// is worked off without taking more than a tenth of one connection from
// the hot path.
func JobRetention(st *store.Store, interval, olderThan time.Duration, log *slog.Logger) Duty {
	return func(ctx context.Context) error {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			var total int64
			for ctx.Err() == nil {
				start := time.Now()
				n, err := st.DeleteFinishedJobs(ctx, st.Now().Add(-olderThan), retentionBatch)
				if err != nil {
					if ctx.Err() == nil {
						log.Warn("job retention failed", "err", err, "deleted", total)
					}
					break
				}
				total += n
				if n < retentionBatch {
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(retentionPause * time.Since(start)):
				}
			}
			if total > 0 {
				log.Info("finished jobs deleted", "deleted", total, "older_than", olderThan)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}
}
