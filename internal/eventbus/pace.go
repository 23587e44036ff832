package eventbus

import (
	"context"
	"time"
)

// pace is how a reader of the log (the feed, a tail, a subscriber) waits
// between reads: the reconnect backoff after a failed read, a short
// growing delay while older transactions hold events back, and otherwise
// nothing but its wake-up.
type pace struct {
	bus               *Bus
	failing, heldBack time.Duration
}

// failed logs a failed read and returns when to try again: the reconnect
// backoff, doubled per failure in a row, with jitter.
func (p *pace) failed(msg string, err error, args ...any) <-chan time.Time {
	p.failing = min(max(p.failing*2, p.bus.cfg.ReconnectMin), p.bus.cfg.ReconnectMax)
	p.heldBack = 0
	p.bus.log.Warn(msg, append(args, "err", err, "retry_in", p.failing)...)
	return time.After(jitter(p.failing))
}

// read records a successful read and returns when to read again without
// a wake-up: soon while events are held back, never otherwise (nil).
func (p *pace) read(held bool) <-chan time.Time {
	p.failing = 0
	if !held {
		p.heldBack = 0
		return nil
	}
	p.heldBack = heldBackDelay(p.heldBack)
	return time.After(p.heldBack)
}

// wait blocks until ctx ends (false), retry fires or wake receives.
func wait(ctx context.Context, retry <-chan time.Time, wake <-chan struct{}) bool {
	select {
	case <-ctx.Done():
		return false
	case <-retry:
	case <-wake:
	}
	return true
}
