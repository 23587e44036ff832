package eventbus

import (
	"context"
	"sync"
)

// feed is the one reader of live events in a process: it reads the log
// after each wake-up and keeps the most recent events in memory, so that
// any number of tails (dispatch, cancel forwarding, watchers, leader
// duties) cost one query per wake-up instead of one each. A tail whose
// cursor is older than what the feed holds reads the database until it
// catches up.
type feed struct {
	mu      sync.Mutex
	running bool
	floor   Cursor  // every event after floor up to the last is in events
	events  []Event // in log order
	next    chan struct{}
}

// feedKeep is how many recent events the feed holds at least (at most
// about three times as many).
const feedKeep = 8192

func newFeed() *feed { return &feed{next: make(chan struct{})} }

func (c Cursor) less(d Cursor) bool { return c.XID < d.XID || (c.XID == d.XID && c.ID < d.ID) }

func cursorOf(e Event) Cursor { return Cursor{XID: e.XID, ID: e.ID} }

// run reads the log from "now" on until ctx ends.
func (b *Bus) runFeed(ctx context.Context) error {
	f := b.feed
	p := pace{bus: b}
	var c Cursor
	for {
		var err error
		if c, err = b.Now(ctx); err == nil {
			break
		}
		if ctx.Err() != nil || !wait(ctx, p.failed("event feed cannot read the position", err), nil) {
			return nil
		}
	}
	wake := make(chan struct{}, 1)
	b.addWaker(wake)
	defer b.removeWaker(wake)
	f.mu.Lock()
	f.running, f.floor, f.events = true, c, nil
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running = false
		close(f.next)
		f.next = make(chan struct{})
		f.mu.Unlock()
	}()
	p = pace{bus: b}
	for {
		events, more, held, err := b.read(ctx, c.XID, c.ID, 4096)
		if err != nil {
			if ctx.Err() != nil || !wait(ctx, p.failed("event feed read failed", err), nil) {
				return nil
			}
			continue
		}
		retry := p.read(held && !more)
		if len(events) > 0 {
			b.cfg.Metrics.publishedEvents(events)
			c = cursorOf(events[len(events)-1])
			f.add(events)
		}
		if more {
			continue
		}
		if !wait(ctx, retry, wake) {
			return nil
		}
	}
}

// add appends newly read events and wakes the tails waiting for them.
// When they do not fit, the last feedKeep events and the new ones move to
// a fresh array with room for as many again: one copy per feedKeep events
// or so, and slices handed to tails are never written.
func (f *feed) add(events []Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.events)+len(events) > cap(f.events) {
		over := max(len(f.events)-feedKeep, 0)
		if over > 0 {
			f.floor = cursorOf(f.events[over-1])
		}
		fresh := make([]Event, 0, len(f.events)-over+len(events)+2*feedKeep)
		f.events = append(fresh, f.events[over:]...)
	}
	f.events = append(f.events, events...)
	close(f.next)
	f.next = make(chan struct{})
}

// after returns the events after c that the feed holds, and a channel
// closed when it has more. ok is false when the feed cannot serve c (not
// running, or c is older than what it holds).
func (f *feed) after(c Cursor) (events []Event, more <-chan struct{}, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running || c.less(f.floor) {
		return nil, nil, false
	}
	// events is sorted: find the first one after c.
	lo, hi := 0, len(f.events)
	for lo < hi {
		m := (lo + hi) / 2
		if c.less(cursorOf(f.events[m])) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return f.events[lo:len(f.events):len(f.events)], f.next, true
}
