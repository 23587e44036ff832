package eventbus

import (
	"context"
	"fmt"
	"time"

	"github.com/hodei-dev/hodei/internal/store/db"
)

type subscriber struct {
	bus   *Bus
	cfg   SubscriberConfig
	h     Handler
	types map[string]bool
	wake  chan struct{}
	xid   int64
	id    int64
}

func (s *subscriber) run(ctx context.Context) error {
	if err := s.loadCursor(ctx); err != nil {
		return err
	}
	var poll <-chan time.Time
	if s.bus.cfg.SafetyPoll > 0 {
		t := time.NewTicker(s.bus.cfg.SafetyPoll)
		defer t.Stop()
		poll = t.C
	}
	var heldBack time.Duration
	for {
		held, err := s.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var retry <-chan time.Time
		switch {
		case err != nil:
			s.bus.log.Warn("subscriber read failed", "subscriber", s.cfg.Name, "err", err)
			heldBack = max(heldBackDelay(heldBack), 100*time.Millisecond)
			retry = time.After(jitter(heldBack))
		case held:
			heldBack = heldBackDelay(heldBack)
			retry = time.After(heldBack)
		default:
			heldBack = 0
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
		events, held, err := s.bus.read(ctx, s.xid, s.id, s.cfg.BatchSize)
		if err != nil {
			return false, err
		}
		if len(events) == 0 {
			return held, nil
		}
		for _, e := range events {
			if s.types == nil || s.types[e.Type] {
				if err := s.deliver(ctx, e); err != nil {
					return false, err
				}
			}
			s.xid, s.id = e.XID, e.ID
		}
		if err := s.bus.q.AdvanceCursor(ctx, db.AdvanceCursorParams{Subscriber: s.cfg.Name, Xid: fmt.Sprint(s.xid), EventID: s.id}); err != nil {
			return false, fmt.Errorf("advance cursor: %w", err)
		}
		if held || len(events) < s.cfg.BatchSize {
			return held, nil
		}
	}
}

// deliver calls the handler until it succeeds or MaxAttempts is reached,
// then parks the event. It only returns an error when ctx ends or the
// dead letter cannot be stored.
func (s *subscriber) deliver(ctx context.Context, e Event) error {
	m := s.bus.cfg.Metrics
	delay := s.cfg.InitialBackoff
	var err error
	for attempt := 1; attempt <= s.cfg.MaxAttempts; attempt++ {
		start := time.Now()
		err = s.h(ctx, e)
		m.handled(s.cfg.Name, e, time.Since(start), err)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.bus.log.Warn("event handler failed", "subscriber", s.cfg.Name, "event_id", e.ID, "type", e.Type, "attempt", attempt, "err", err)
		if attempt == s.cfg.MaxAttempts {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(jitter(delay)):
		}
		delay = min(delay*2, s.cfg.MaxBackoff)
	}
	m.deadLettered(s.cfg.Name, e)
	if perr := s.bus.q.ParkDeadLetter(ctx, db.ParkDeadLetterParams{
		Subscriber: s.cfg.Name, EventID: e.ID, Attempts: int32(s.cfg.MaxAttempts), LastError: err.Error(), Now: time.Now(),
	}); perr != nil {
		return fmt.Errorf("park event %d: %w", e.ID, perr)
	}
	s.bus.log.Error("event dead-lettered", "subscriber", s.cfg.Name, "event_id", e.ID, "type", e.Type, "err", err)
	return nil
}
