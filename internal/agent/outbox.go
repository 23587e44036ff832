package agent

import (
	"sync"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// outbox holds the reports the server has not acknowledged yet, in order.
// Every (re)connection sends what that connection has not sent; an Ack
// removes what it covers. Reports are idempotent on the server (token,
// seq), so sending one twice is harmless.
type outbox struct {
	mu     sync.Mutex
	items  []*pending
	notify chan struct{}
	space  chan struct{}
	limit  int
}

type pending struct {
	jobID    string
	token    int64
	seq      int64 // log batch seq; 0 for the finish report
	finished bool
	msg      *hodeiv1.ConnectRequest
	sentOn   int // connection generation that sent it
}

func newOutbox(limit int) *outbox {
	return &outbox{notify: make(chan struct{}, 1), space: make(chan struct{}, 1), limit: limit}
}

func (o *outbox) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// full reports whether log batches should wait (backpressure).
func (o *outbox) full() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.items) >= o.limit
}

func (o *outbox) add(p *pending) {
	o.mu.Lock()
	o.items = append(o.items, p)
	o.mu.Unlock()
	o.signal(o.notify)
}

// unsent returns the reports generation gen has not sent and marks them.
func (o *outbox) unsent(gen int) []*hodeiv1.ConnectRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []*hodeiv1.ConnectRequest
	for _, p := range o.items {
		if p.sentOn != gen {
			p.sentOn = gen
			out = append(out, p.msg)
		}
	}
	return out
}

// ack removes what a acknowledges.
func (o *outbox) ack(a *hodeiv1.Ack) {
	o.mu.Lock()
	kept := o.items[:0]
	for _, p := range o.items {
		covered := p.token == a.FencingToken && (a.Stale || (a.Finished && p.finished) || (p.seq > 0 && p.seq <= a.LogSeq))
		if !covered {
			kept = append(kept, p)
		}
	}
	for i := len(kept); i < len(o.items); i++ {
		o.items[i] = nil
	}
	o.items = kept
	o.mu.Unlock()
	o.signal(o.space)
}

func (o *outbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.items)
}

// attempts lists the attempts with unacknowledged reports (job id and
// token; their number is not kept).
func (o *outbox) attempts() []*hodeiv1.RunningAttempt {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[int64]bool{}
	var out []*hodeiv1.RunningAttempt
	for _, p := range o.items {
		if !seen[p.token] {
			seen[p.token] = true
			out = append(out, &hodeiv1.RunningAttempt{JobId: p.jobID, FencingToken: p.token})
		}
	}
	return out
}
