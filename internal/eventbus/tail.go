package eventbus

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Filter selects events of a live tail; empty fields match everything.
type Filter struct {
	Types         []string
	AggregateKind string
	AggregateID   string
	// Lazy hands fn its events with the payload still encoded: Payload is
	// nil and Decode decodes it. For a tail that reads the payload of few
	// of its events or none (decoding is most of what a tail costs).
	Lazy bool
	// Consumer names the tail in hodei_event_processing_seconds{consumer}
	// (a fixed name per component, never an id); an unnamed tail is not
	// measured.
	Consumer string
}

// ErrUnknownType is returned for a filter naming a type that is not in
// the catalog (Types): such a filter would silently match nothing.
var ErrUnknownType = errors.New("unknown event type")

var knownTypes = func() map[string]bool {
	m := map[string]bool{}
	for _, t := range Types() {
		m[t] = true
	}
	return m
}()

// Validate reports a type name that is not an event type of the catalog.
func (f Filter) Validate() error {
	for _, t := range f.Types {
		if !knownTypes[t] {
			return fmt.Errorf("%w %q", ErrUnknownType, t)
		}
	}
	return nil
}

func (f Filter) match(e Event) bool {
	if f.AggregateKind != "" && f.AggregateKind != e.AggregateKind {
		return false
	}
	if f.AggregateID != "" && f.AggregateID != e.AggregateID {
		return false
	}
	if len(f.Types) == 0 {
		return true
	}
	for _, t := range f.Types {
		if t == e.Type {
			return true
		}
	}
	return false
}

// ErrUnknownEvent: a tail was asked to start after an event id the log
// does not hold (never written, or pruned by retention).
var ErrUnknownEvent = errors.New("no event has this id (never written, or pruned by retention)")

// Tail calls fn for every event matching f, live, starting after event
// afterID (0 = now; ErrUnknownEvent when the log does not hold it), until
// ctx ends (nil) or fn returns an error. Nothing
// is stored: a tail is for people, dashboards and wake-ups, not for work.
// Once started, a tail outlives database outages: failed reads are retried
// with the reconnect backoff, from where the tail was.
func (b *Bus) Tail(ctx context.Context, afterID int64, f Filter, fn func(Event) error) error {
	var c Cursor
	var err error
	if afterID > 0 {
		c.ID = afterID
		if c.XID, err = b.PositionOf(ctx, afterID); errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("tail: event %d: %w", afterID, ErrUnknownEvent)
		} else if err != nil {
			return fmt.Errorf("tail: event %d: %w", afterID, err)
		}
	} else if c, err = b.Now(ctx); err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	return b.TailFrom(ctx, c, f, fn)
}

// Cursor is a position in the event log.
type Cursor struct{ XID, ID int64 }

// Now returns the cursor of "now": a tail from it gets every event
// committed after Now returned (and possibly a few committed just
// before). Take it before reading state that the tail keeps up to date,
// so that no change falls between the read and the tail.
func (b *Bus) Now(ctx context.Context) (Cursor, error) {
	xid, id, err := b.Position(ctx)
	return Cursor{XID: xid, ID: id}, err
}

// TailFrom is Tail starting after cursor c.
func (b *Bus) TailFrom(ctx context.Context, c Cursor, f Filter, fn func(Event) error) error {
	if err := f.Validate(); err != nil {
		return err
	}
	fn = b.cfg.Metrics.timed(f.Consumer, fn)
	wake := make(chan struct{}, 1)
	b.addWaker(wake)
	defer b.removeWaker(wake)
	p := pace{bus: b}
	for {
		// Served by the process's feed when it holds our position.
		if events, more, ok := b.feed.after(c); ok {
			if err := f.deliver(events, &c, fn); err != nil {
				return err
			}
			if len(events) == 0 && !wait(ctx, nil, more) {
				return nil
			}
			continue
		}
		events, more, held, err := b.read(ctx, c.XID, c.ID, 4096)
		if err != nil {
			if ctx.Err() != nil || !wait(ctx, p.failed("tail read failed", err), nil) {
				return nil
			}
			continue
		}
		retry := p.read(held && !more)
		if err := f.deliver(events, &c, fn); err != nil {
			return err
		}
		if !more && !wait(ctx, retry, wake) {
			return nil
		}
	}
}

// Watch runs TailFrom in a goroutine, for a component whose loop waits on
// other things too. The channel receives once, when the tail ends: its
// error (an invalid filter at once), or nil once ctx ended. A component
// returns only after that receive, so the goroutine never outlives it.
func (b *Bus) Watch(ctx context.Context, c Cursor, f Filter, fn func(Event) error) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := b.TailFrom(ctx, c, f, fn)
		if ctx.Err() != nil {
			err = nil
		}
		done <- err
	}()
	return done
}

// deliver hands fn the events that match f, moving c past each.
func (f Filter) deliver(events []Event, c *Cursor, fn func(Event) error) error {
	for _, e := range events {
		*c = cursorOf(e)
		if f.match(e) {
			if err := deliverTo(fn, e, f.Lazy); err != nil {
				return err
			}
		}
	}
	return nil
}

// deliverTo hands a tail's matching event to fn, with its payload decoded
// unless the tail is lazy.
func deliverTo(fn func(Event) error, e Event, lazy bool) error {
	if !lazy {
		var err error
		if e, err = e.decoded(); err != nil {
			return err
		}
	}
	return fn(e)
}
