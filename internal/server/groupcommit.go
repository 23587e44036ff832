package server

import (
	"context"
	"sync"
)

// groupCommit applies the items of concurrent callers together: while one
// transaction runs, the items that arrive from any caller wait, and the
// next transaction takes all of them. Under load that means few, large
// transactions instead of one per caller; when idle an item goes alone
// and at once (no timer, no added latency). It serves the reports of
// every worker stream of this replica and the job submissions.
//
// There is no goroutine of its own: the caller that finds no transaction
// running becomes the committer until its own items are applied, and
// hands what is still waiting to a new goroutine.
type groupCommit[In, Out any] struct {
	// apply stores items in one transaction and returns one outcome per
	// item, in order.
	apply func(ctx context.Context, items []In) ([]Out, error)
	// max bounds the items of one combined transaction (a caller's own
	// items always go together).
	max int

	mu      sync.Mutex
	pending []*commitReq[In, Out]
	running bool
}

type commitReq[In, Out any] struct {
	items []In
	out   []Out
	err   error
	done  chan struct{}
}

// Apply applies items, in order, in one transaction with whatever else
// is waiting, and returns their outcomes. A transaction that fails is
// retried one caller at a time, so that one caller's bad item fails only
// that caller.
func (g *groupCommit[In, Out]) Apply(ctx context.Context, items []In) ([]Out, error) {
	req := &commitReq[In, Out]{items: items, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, req)
	if g.running {
		g.mu.Unlock()
		<-req.done
		return req.out, req.err
	}
	g.running = true
	g.mu.Unlock()
	g.commitUntil(context.WithoutCancel(ctx), req)
	return req.out, req.err
}

// commitUntil commits waiting batches until mine is done, then leaves the
// rest to another goroutine.
func (g *groupCommit[In, Out]) commitUntil(ctx context.Context, mine *commitReq[In, Out]) {
	for {
		g.mu.Lock()
		if len(g.pending) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		if mine != nil && closed(mine.done) {
			g.mu.Unlock()
			go g.commitUntil(ctx, nil)
			return
		}
		var batch []*commitReq[In, Out]
		n := 0
		for len(g.pending) > 0 && (n == 0 || n+len(g.pending[0].items) <= g.max) {
			n += len(g.pending[0].items)
			batch = append(batch, g.pending[0])
			g.pending = g.pending[1:]
		}
		g.mu.Unlock()
		g.commit(ctx, batch)
	}
}

func (g *groupCommit[In, Out]) commit(ctx context.Context, batch []*commitReq[In, Out]) {
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	if len(batch) == 1 {
		batch[0].out, batch[0].err = g.apply(ctx, batch[0].items)
		return
	}
	var all []In
	for _, r := range batch {
		all = append(all, r.items...)
	}
	out, err := g.apply(ctx, all)
	if err != nil {
		for _, r := range batch {
			r.out, r.err = g.apply(ctx, r.items)
		}
		return
	}
	for _, r := range batch {
		r.out, out = out[:len(r.items):len(r.items)], out[len(r.items):]
	}
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
