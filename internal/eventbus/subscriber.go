package eventbus

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hodei-dev/hodei/internal/store/db"
)

type subscriber struct {
	bus   *Bus
	cfg   SubscriberConfig
	h     Handler
	m     *Metrics // the bus's; nil for a replay of a subscriber run elsewhere
	types map[string]bool
	wake  chan struct{}
	// handling serialises handler calls of the run loop and of Replay.
	handling sync.Mutex
	// Cursor and lag bookkeeping; owned by run.
	xid, id int64
	lagAt   time.Time // last lag count
}

// lagRefresh is how often a subscriber that is behind counts its lag.
const lagRefresh = time.Second

func (s *subscriber) run(ctx context.Context) error {
	// Database errors are retried with the reconnect backoff, from the
	// first query on: an outage stalls a subscriber, never ends it.
	p := pace{bus: s.bus}
	for {
		err := s.loadCursor(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil || !wait(ctx, p.failed("subscriber cannot load its cursor", err, "subscriber", s.cfg.Name), nil) {
			return nil
		}
	}
	p = pace{bus: s.bus}
	var poll <-chan time.Time
	if s.bus.cfg.SafetyPoll > 0 {
		t := time.NewTicker(s.bus.cfg.SafetyPoll)
		defer t.Stop()
		poll = t.C
	}
	for {
		held, err := s.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var retry <-chan time.Time
		if err != nil {
			retry = p.failed("subscriber read failed", err, "subscriber", s.cfg.Name)
		} else {
			if held {
				s.m.held(s.cfg.Name)
			}
			retry = p.read(held)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-poll:
		case <-retry:
		}
	}
}

func (s *subscriber) loadCursor(ctx context.Context) error {
	var start int64
	var startID int64
	if s.cfg.StartAtNow {
		var err error
		if start, startID, err = s.bus.Position(ctx); err != nil {
			return fmt.Errorf("subscriber %s: %w", s.cfg.Name, err)
		}
	}
	q := s.bus.q
	if err := q.EnsureCursor(ctx, db.EnsureCursorParams{Subscriber: s.cfg.Name, Xid: fmt.Sprint(start), EventID: startID}); err != nil {
		return fmt.Errorf("subscriber %s: cursor: %w", s.cfg.Name, err)
	}
	c, err := q.GetCursor(ctx, s.cfg.Name)
	if err != nil {
		return fmt.Errorf("subscriber %s: cursor: %w", s.cfg.Name, err)
	}
	s.xid, s.id = c.Xid, c.EventID
	return nil
}

// drain handles everything readable, storing the cursor after each batch.
func (s *subscriber) drain(ctx context.Context) (heldBack bool, err error) {
	for {
		events, more, held, err := s.bus.read(ctx, s.xid, s.id, s.cfg.BatchSize)
		if err != nil {
			return false, err
		}
		if len(events) == 0 {
			s.m.lag(s.cfg.Name, 0)
			return held, nil
		}
		for _, e := range events {
			if s.types == nil || s.types[e.Type] {
				e, err := e.decoded()
				if err != nil {
					return false, err
				}
				if _, err := s.deliver(ctx, e); err != nil {
					return false, err
				}
			}
			s.xid, s.id = e.XID, e.ID
		}
		if err := s.bus.q.AdvanceCursor(ctx, db.AdvanceCursorParams{Subscriber: s.cfg.Name, Xid: fmt.Sprint(s.xid), EventID: s.id}); err != nil {
			return false, fmt.Errorf("advance cursor: %w", err)
		}
		if held || !more {
			s.m.lag(s.cfg.Name, 0)
			return held, nil
		}
		s.countLag(ctx)
	}
}

// countLag sets the lag gauge of a subscriber that is behind, at most
// once per lagRefresh. A caught-up subscriber sets it to 0 without a query.
func (s *subscriber) countLag(ctx context.Context) {
	if s.m == nil || time.Since(s.lagAt) < lagRefresh {
		return
	}
	s.lagAt = time.Now()
	n, err := s.bus.q.CountEventsAfter(ctx, db.CountEventsAfterParams{AfterXid: fmt.Sprint(s.xid), AfterID: s.id})
	if err != nil {
		s.bus.log.Debug("count subscriber lag", "subscriber", s.cfg.Name, "err", err)
		return
	}
	s.m.lag(s.cfg.Name, n)
}

// deliver calls the handler until it succeeds (handled) or MaxAttempts is
// reached, then parks the event. It only returns an error when ctx ends or
// the dead letter cannot be stored.
func (s *subscriber) deliver(ctx context.Context, e Event) (handled bool, err error) {
	return s.deliverWith(ctx, e, s.cfg)
}

// deliverWith is deliver with the attempts and backoff of p.
func (s *subscriber) deliverWith(ctx context.Context, e Event, p SubscriberConfig) (handled bool, err error) {
	delay := p.InitialBackoff
	var herr error
	for attempt := 1; attempt <= p.MaxAttempts; attempt++ {
		if herr = s.call(ctx, e); herr == nil {
			return true, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		s.bus.log.Warn("event handler failed", "subscriber", s.cfg.Name, "event_id", e.ID, "type", e.Type, "attempt", attempt, "err", herr)
		if attempt == p.MaxAttempts {
			break
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(jitter(delay)):
		}
		delay = min(delay*2, p.MaxBackoff)
	}
	s.m.deadLettered(s.cfg.Name, e)
	if err := s.park(ctx, e, p.MaxAttempts, herr.Error()); err != nil {
		return false, err
	}
	s.bus.log.Error("event dead-lettered", "subscriber", s.cfg.Name, "event_id", e.ID, "type", e.Type, "err", herr)
	return false, nil
}

// call runs the handler once, never concurrently with another call of the
// same subscriber.
func (s *subscriber) call(ctx context.Context, e Event) error {
	s.handling.Lock()
	defer s.handling.Unlock()
	start := time.Now()
	err := s.h(ctx, e)
	s.m.handled(s.cfg.Name, e, time.Since(start), err)
	s.m.processed(s.cfg.Name, e)
	return err
}

func (s *subscriber) park(ctx context.Context, e Event, attempts int, lastErr string) error {
	if err := s.bus.q.ParkDeadLetter(ctx, db.ParkDeadLetterParams{
		Subscriber: s.cfg.Name, EventID: e.ID, Attempts: int32(attempts), LastError: lastErr, Now: s.bus.cfg.Now(),
	}); err != nil {
		return fmt.Errorf("park event %d: %w", e.ID, err)
	}
	return nil
}
