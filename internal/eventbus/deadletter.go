package eventbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-dev/hodei/internal/store/db"
)

// DeadLetter is a parked event.
type DeadLetter struct {
	ID         int64
	Subscriber string
	Event      Event
	Attempts   int
	LastError  string
	ParkedAt   time.Time
}

// ListDeadLetters lists parked events, oldest first; subscriber "" = all.
func (b *Bus) ListDeadLetters(ctx context.Context, subscriber string, limit int) ([]DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := b.q.ListDeadLetters(ctx, db.ListDeadLettersParams{Subscriber: subscriber, MaxRows: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	out := make([]DeadLetter, 0, len(rows))
	for _, r := range rows {
		e, err := row{FirstID: r.FirstID, Xid: r.Xid, Types: r.Types, AggregateKinds: r.AggregateKinds, AggregateIds: r.AggregateIds,
			CorrelationIds: r.CorrelationIds, CreatedAt: r.CreatedAt, Payloads: r.Payloads}.decodedEvent(r.EventID)
		if err != nil {
			return nil, err
		}
		out = append(out, DeadLetter{ID: r.ID, Subscriber: r.Subscriber, Event: e, Attempts: int(r.Attempts), LastError: r.LastError, ParkedAt: r.ParkedAt})
	}
	return out, nil
}

// ErrUnknownSubscriber is returned by Replay when the dead letter's
// subscriber is not registered on this bus.
var ErrUnknownSubscriber = errors.New("subscriber not registered in this process")

// ErrOtherSubscriber is returned by ReplayWith when the dead letter
// belongs to another subscriber than the one it was asked to replay to.
var ErrOtherSubscriber = errors.New("dead letter of another subscriber")

// ErrStillFailing is returned by Replay when the handler failed again and
// the event was parked again.
var ErrStillFailing = errors.New("handler failed again; event parked again")

// ErrNoDeadLetter is returned by Replay and ReplayWith for an id that
// names no parked event (never parked, or replayed already).
var ErrNoDeadLetter = errors.New("no such dead letter")

// Replay re-delivers a parked event to its subscriber's handler, with the
// subscriber's retry policy; if it fails again it is parked again and
// Replay returns ErrStillFailing. Replay may run while the bus runs: the
// subscriber's handler is still called one event at a time.
func (b *Bus) Replay(ctx context.Context, deadLetterID int64) error {
	return b.replay(ctx, deadLetterID, func(name string) (*subscriber, SubscriberConfig, error) {
		s := b.registered(name)
		if s == nil {
			return nil, SubscriberConfig{}, fmt.Errorf("%q: %w", name, ErrUnknownSubscriber)
		}
		return s, s.cfg, nil
	})
}

// ReplayWith is Replay for the subscriber cfg.Name whether this process
// runs it or not (another replica may), with cfg's attempts and backoff
// instead of the subscriber's. When this process runs the subscriber, its
// handler is called, one event at a time as by Replay; otherwise h is,
// and no metrics are recorded (the subscriber's series are those of the
// process that runs it). A dead letter of another subscriber is left
// alone: ReplayWith returns ErrOtherSubscriber.
func (b *Bus) ReplayWith(ctx context.Context, deadLetterID int64, cfg SubscriberConfig, h Handler) error {
	cfg = cfg.withDefaults()
	return b.replay(ctx, deadLetterID, func(name string) (*subscriber, SubscriberConfig, error) {
		if name != cfg.Name {
			return nil, SubscriberConfig{}, fmt.Errorf("%q: %w", name, ErrOtherSubscriber)
		}
		s := b.registered(name)
		if s == nil {
			s = &subscriber{bus: b, cfg: cfg, h: h}
		}
		return s, cfg, nil
	})
}

// replay takes a dead letter and delivers its event to the subscriber
// pick returns for the dead letter's subscriber name, with the attempts
// and backoff of the config it returns. An error of pick leaves the dead
// letter as it was.
func (b *Bus) replay(ctx context.Context, deadLetterID int64, pick func(name string) (*subscriber, SubscriberConfig, error)) error {
	var sub *subscriber
	var p SubscriberConfig // its attempts and backoff
	var ev Event
	err := pgxBeginFunc(ctx, b, func(q *db.Queries) error {
		now := b.cfg.Now()
		r, err := q.TakeDeadLetter(ctx, db.TakeDeadLetterParams{ID: deadLetterID, Now: &now})
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("dead letter %d: %w", deadLetterID, ErrNoDeadLetter)
		}
		if err != nil {
			return fmt.Errorf("dead letter %d: %w", deadLetterID, err)
		}
		if sub, p, err = pick(r.Subscriber); err != nil {
			return fmt.Errorf("dead letter %d: %w", deadLetterID, err)
		}
		er, err := q.GetEvent(ctx, r.EventID)
		if err != nil {
			return fmt.Errorf("dead letter %d: event %d: %w", deadLetterID, r.EventID, err)
		}
		ev, err = row(er).decodedEvent(r.EventID)
		return err
	})
	if err != nil {
		return err
	}
	handled, err := sub.deliverWith(ctx, ev, p)
	if err != nil {
		// Interrupted: the dead letter is already taken, so park it again
		// rather than lose it.
		if perr := sub.park(context.WithoutCancel(ctx), ev, 0, "replay interrupted: "+err.Error()); perr != nil {
			return fmt.Errorf("replay dead letter %d: %w (and %w)", deadLetterID, err, perr)
		}
		return fmt.Errorf("replay dead letter %d: %w", deadLetterID, err)
	}
	if !handled {
		return fmt.Errorf("replay dead letter %d: %w", deadLetterID, ErrStillFailing)
	}
	return nil
}
