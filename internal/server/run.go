package server

import (
	"context"
	"fmt"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
)

// Run does this replica's background duties until ctx ends: one write for
// all heartbeats per interval, lease expiry of silent streams, forwarding
// JobCancelled to the worker running the job, waking the log followers
// of a job that ended, and recording when API tokens were last used.
func (s *Server) Run(ctx context.Context) error {
	from, err := s.bus.Now(ctx)
	if err != nil {
		return fmt.Errorf("cancel forwarder: %w", err)
	}
	// A job's end wakes its log followers (JobFailed also ends an attempt
	// that is retried: the follower wakes, finds the job not final and
	// goes on waiting); a cancel also goes to the worker running the job.
	// The same events, with submissions, assignments and queue depths,
	// feed the rolling counters of GetJobStats.
	tail := s.bus.Watch(ctx, from, eventbus.Filter{Types: statsTypes, Lazy: true, Consumer: "log_followers"}, func(e eventbus.Event) error {
		s.stats.add(e)
		switch e.Type {
		case "JobCompleted", "JobFailed":
			s.logs.wake(e.AggregateID)
			return nil
		case "JobCancelled":
			s.logs.wake(e.AggregateID)
		default:
			return nil
		}
		p, err := e.Decode()
		if err != nil {
			return err
		}
		s.forwardCancel(p.GetJobCancelled())
		return nil
	})
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case err := <-tail:
			if err != nil {
				return fmt.Errorf("event tail: %w", err)
			}
			return nil
		case <-t.C:
			s.beat(ctx)
			if err := s.tokens.flushUsage(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("record token use", "err", err)
			}
		}
	}
}

// forwardCancel sends a cancelled job's attempts on this replica's
// streams their cancel message.
func (s *Server) forwardCancel(m *hodeiv1.JobCancelled) {
	for _, c := range s.workers.all() {
		c.mu.Lock()
		var tokens []int64
		for t, j := range c.running {
			if j == m.GetJobId() {
				tokens = append(tokens, t)
			}
		}
		c.mu.Unlock()
		for _, t := range tokens {
			c.send(cancelMsg(t, m.GetReason()))
		}
	}
}

// beat closes the streams of workers silent past their lease and records
// the others' last contact, one write for all.
func (s *Server) beat(ctx context.Context) {
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
	if len(seen) == 0 {
		return
	}
	expired, err := s.store.TouchWorkers(ctx, seen)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("record heartbeats", "err", err)
	}
	// The leader expired these although their stream lives here (e.g. a
	// stall longer than the lease): close the stream; the agent
	// reconnects and reconciles.
	for _, id := range expired {
		if c := s.workers.get(id); c != nil {
			s.log.Warn("worker expired by the leader; closing its stream", "worker_id", id)
			c.close()
		}
	}
}
