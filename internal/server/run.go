package server

import (
	"context"
	"fmt"
	"time"

	"github.com/hodei-dev/hodei/internal/eventbus"
)

// Run does this replica's background duties until ctx ends: one write for
// all heartbeats per interval, lease expiry of silent streams, forwarding
// JobCancelled to the worker running the job, and waking the log followers
// of a job that ended.
func (s *Server) Run(ctx context.Context) error {
	from, err := s.bus.Now(ctx)
	if err != nil {
		return fmt.Errorf("cancel forwarder: %w", err)
	}
	errc := make(chan error, 2)
	go func() {
		// A job's end: JobFailed also ends an attempt that is retried (the
		// follower wakes, finds the job not final and goes on waiting).
		errc <- s.bus.TailFrom(ctx, from, eventbus.Filter{Types: []string{"JobCompleted", "JobFailed", "JobCancelled"}, Lazy: true}, func(e eventbus.Event) error {
			s.logs.wake(e.AggregateID)
			return nil
		})
	}()
	go func() {
		errc <- s.bus.TailFrom(ctx, from, eventbus.Filter{Types: []string{"JobCancelled"}}, func(e eventbus.Event) error {
			id := e.Payload.GetJobCancelled().GetJobId()
			for _, c := range s.workers.all() {
				c.mu.Lock()
				var tokens []int64
				for t, j := range c.running {
					if j == id {
						tokens = append(tokens, t)
					}
				}
				c.mu.Unlock()
				for _, t := range tokens {
					c.send(cancelMsg(t, e.Payload.GetJobCancelled().GetReason()))
				}
			}
			return nil
		})
	}()
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-errc
			<-errc
			return nil
		case err := <-errc:
			return fmt.Errorf("event tails: %w", err)
		case <-t.C:
		}
		seen := map[string]time.Time{}
		now := time.Now()
		for _, c := range s.workers.all() {
			c.mu.Lock()
			last := c.lastSeen
			c.mu.Unlock()
			if now.Sub(last) > s.cfg.Lease {
				s.log.Warn("worker silent past its lease; closing its stream", "worker_id", c.id)
				c.mu.Lock()
				c.expired = true
				c.mu.Unlock()
				c.close()
				continue
			}
			seen[c.id] = last
		}
		if len(seen) > 0 {
			expired, err := s.store.TouchWorkers(ctx, seen)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("record heartbeats", "err", err)
			}
			// The leader expired these although their stream lives here
			// (e.g. a stall longer than the lease): close the stream; the
			// agent reconnects and reconciles.
			for _, id := range expired {
				if c := s.workers.get(id); c != nil {
					s.log.Warn("worker expired by the leader; closing its stream", "worker_id", id)
					c.close()
				}
			}
		}
	}
}
