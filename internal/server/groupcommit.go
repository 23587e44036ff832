package server

import (
	"context"
	"sync"

	"github.com/hodei-dev/hodei/internal/store"
)

// groupCommit applies the reports of every worker stream of this replica
// together: while one transaction runs, the reports that arrive from any
// stream wait, and the next transaction takes all of them. Under load that
// means few, large transactions instead of one per stream per message;
// when idle a report goes alone and at once (no timer, no added latency).
//
// There is no goroutine of its own: the caller that finds no transaction
// running becomes the committer until its own reports are applied, and
// hands what is still waiting to a new goroutine.
type groupCommit struct {
	apply func(ctx context.Context, reports []store.Report) ([]store.ReportOutcome, error)

	mu      sync.Mutex
	pending []*commitReq
	running bool
}

type commitReq struct {
	reports []store.Report
	out     []store.ReportOutcome
	err     error
	done    chan struct{}
}

// maxCommit bounds the reports of one combined transaction.
const maxCommit = 2048

// Apply applies reports, in order, in one transaction with whatever else
// is waiting, and returns their outcomes. A transaction that fails is
// retried one stream at a time, so that one stream's bad report fails
// only that stream.
func (g *groupCommit) Apply(ctx context.Context, reports []store.Report) ([]store.ReportOutcome, error) {
	req := &commitReq{reports: reports, done: make(chan struct{})}
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
func (g *groupCommit) commitUntil(ctx context.Context, mine *commitReq) {
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
		var batch []*commitReq
		n := 0
		for len(g.pending) > 0 && (n == 0 || n+len(g.pending[0].reports) <= maxCommit) {
			n += len(g.pending[0].reports)
			batch = append(batch, g.pending[0])
			g.pending = g.pending[1:]
		}
		g.mu.Unlock()
		g.commit(ctx, batch)
	}
}

func (g *groupCommit) commit(ctx context.Context, batch []*commitReq) {
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	if len(batch) == 1 {
		batch[0].out, batch[0].err = g.apply(ctx, batch[0].reports)
		return
	}
	var all []store.Report
	for _, r := range batch {
		all = append(all, r.reports...)
	}
	out, err := g.apply(ctx, all)
	if err != nil {
		for _, r := range batch {
			r.out, r.err = g.apply(ctx, r.reports)
		}
		return
	}
	for _, r := range batch {
		r.out, out = out[:len(r.reports)], out[len(r.reports):]
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
