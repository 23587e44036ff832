package scheduler

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-dev/hodei/internal/store"
)

// pendingRetries are the retries the dispatcher waits for, by run_at: at
// their run_at each moves back the claim cursors of the workers that can
// run it (a retried job keeps its place in dispatch order, before cursors
// that went past it). They come from JobRetryScheduled and, when the
// dispatcher starts (and after an event it could not read), from the
// retries waiting out a backoff in the store. So a retry costs a read of
// its own row, not a walk of the ready index from its head (which,
// behind a backlog nobody can run, reads every job), and no pass reads
// when the next retry is due.
type pendingRetries struct {
	mu    sync.Mutex
	at    retryHeap
	stale bool          // the retries are to be read from the store (loadDelayed)
	wake  chan struct{} // an entry was added, or stale set
}

func newPendingRetries() *pendingRetries {
	return &pendingRetries{stale: true, wake: make(chan struct{}, 1)}
}

// reload asks for the retries to be read from the store again.
func (p *pendingRetries) reload() {
	p.mu.Lock()
	p.stale = true
	p.mu.Unlock()
	p.signal()
}

func (p *pendingRetries) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// add notes the retry of job id at runAt.
func (p *pendingRetries) add(id uuid.UUID, runAt time.Time) {
	p.mu.Lock()
	heap.Push(&p.at, store.DelayedRetry{ID: id, RunAt: runAt})
	p.mu.Unlock()
	p.signal()
}

// due removes and returns the ids of the retries whose run_at is not
// after now (at most max), and the run_at of the next one (noRetry: none).
func (p *pendingRetries) due(now time.Time, max int) ([]uuid.UUID, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []uuid.UUID
	for len(p.at) > 0 && !p.at[0].RunAt.After(now) && len(ids) < max {
		ids = append(ids, heap.Pop(&p.at).(store.DelayedRetry).ID)
	}
	if len(p.at) == 0 {
		return ids, noRetry
	}
	return ids, p.at[0].RunAt
}

type retryHeap []store.DelayedRetry

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].RunAt.Before(h[j].RunAt) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(store.DelayedRetry)) }
func (h *retryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// placesPerRead bounds the ids of one read of retried jobs' places.
const placesPerRead = 1000

// placeDueRetries moves the claim cursors back for the retries whose
// run_at has come and returns when the next one comes. A failed read
// drops every cursor (the next claims start from the head).
func (d *Dispatcher) placeDueRetries(ctx context.Context) time.Time {
	for {
		ids, next := d.retries.due(d.store.Now(), placesPerRead)
		if len(ids) == 0 {
			return next
		}
		places, err := d.store.RetryPlaces(ctx, ids)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("place retried jobs", "err", err)
				d.cursors.reset()
				d.Kick()
			}
			return next
		}
		for _, p := range places {
			d.cursors.ready(p.Pos, p.Labels, p.Image)
		}
		if len(places) > 0 {
			select {
			case d.due <- struct{}{}:
			default:
			}
		}
	}
}

// loadDelayed adds the retries waiting out a backoff in the store when
// they are stale: when the dispatcher starts (later ones come with their
// JobRetryScheduled), or after an event it could not read. A retry
// listed twice only moves the cursors back twice.
func (d *Dispatcher) loadDelayed(ctx context.Context) error {
	p := d.retries
	p.mu.Lock()
	stale := p.stale
	p.stale = false
	p.mu.Unlock()
	if !stale {
		return nil
	}
	rs, err := d.store.DelayedRetries(ctx, d.store.Now())
	if err != nil {
		p.mu.Lock()
		p.stale = true
		p.mu.Unlock()
		return err
	}
	p.mu.Lock()
	for _, r := range rs {
		heap.Push(&p.at, r)
	}
	p.mu.Unlock()
	return nil
}
