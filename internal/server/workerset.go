package server

import (
	"context"
	"sync"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/jobpb"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/tracing"
)

// WorkerSet holds the workers whose streams are open on this replica: the
// only workers this replica's dispatcher claims jobs for.
type WorkerSet struct {
	mu       sync.Mutex
	conns    map[string]*workerConn
	capacity chan struct{}
	tracer   *tracing.Tracer // RunJob carries the attempt's traceparent when set
	// resolve fills the secrets of an attempt whose spec references some
	// (Server.resolveSecrets).
	resolve   func(workerID string, a store.Assignment, run *hodeiv1.RunJob)
	onCreated func([]job.Job) // OnCreated
}

func newWorkerSet(tr *tracing.Tracer) *WorkerSet {
	return &WorkerSet{conns: map[string]*workerConn{}, capacity: make(chan struct{}, 1), tracer: tr}
}

// Capacity receives when a worker connected, a slot freed up or this
// replica created jobs: a dispatch pass may claim something. (Other
// replicas hear of new jobs through JobCreated.) Wake-ups fold: one
// pending receive stands for any number of them.
func (r *WorkerSet) Capacity() <-chan struct{} { return r.capacity }

// OnCreated sets what hears of the jobs this replica creates, before its
// dispatcher is woken for them (the dispatcher's JobsCreated). Set it
// before the server runs.
func (r *WorkerSet) OnCreated(fn func([]job.Job)) { r.onCreated = fn }

// created tells of jobs this replica created and wakes its dispatcher.
func (r *WorkerSet) created(js []job.Job) {
	if r.onCreated != nil && len(js) > 0 {
		r.onCreated(js)
	}
	r.wakeDispatch()
}

// wakeDispatch signals Capacity.
func (r *WorkerSet) wakeDispatch() {
	select {
	case r.capacity <- struct{}{}:
	default:
	}
}

// Free lists connected, non-draining workers with free slots (a worker
// that prefetches counts its queue as slots).
func (r *WorkerSet) Free() []store.Slot {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var out []store.Slot
	for _, c := range r.conns {
		c.mu.Lock()
		free := c.slots + c.queueLimit(now) - len(c.running)
		draining := c.draining
		c.mu.Unlock()
		if free > 0 && !draining {
			out = append(out, store.Slot{Worker: store.WorkerMatch{ID: c.id, Labels: c.labels, Image: c.image, Provider: c.provider,
				CPUMillis: c.cpuMillis, MemoryMiB: c.memoryMiB}, Free: free})
		}
	}
	return out
}

// Len is the number of connected workers.
func (r *WorkerSet) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// Deliver sends claimed attempts to their worker's stream. It returns the
// attempts it could not deliver (the worker is gone).
func (r *WorkerSet) Deliver(workerID string, as []store.Assignment) []store.Assignment {
	r.mu.Lock()
	c := r.conns[workerID]
	r.mu.Unlock()
	if c == nil {
		return as
	}
	for i, a := range as {
		run := &hodeiv1.RunJob{JobId: a.JobID, Attempt: int32(a.Attempt), FencingToken: a.Token, Spec: jobpb.SpecToProto(a.Spec)}
		if r.tracer.Enabled() {
			run.Traceparent = tracing.Traceparent(tracing.Attempt(context.Background(), a.JobID, a.Attempt))
		}
		if len(a.Spec.Secrets) > 0 && r.resolve != nil {
			r.resolve(workerID, a, run)
		}
		msg := &hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_Run{Run: run}}
		c.mu.Lock()
		c.running[a.Token] = a.JobID
		c.mu.Unlock()
		if !c.send(msg) {
			c.mu.Lock()
			for _, b := range as[i:] {
				delete(c.running, b.Token)
			}
			c.mu.Unlock()
			return as[i:]
		}
	}
	return nil
}

func (r *WorkerSet) get(id string) *workerConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[id]
}

// add registers c, closing an older stream of the same worker.
func (r *WorkerSet) add(c *workerConn) {
	r.mu.Lock()
	old := r.conns[c.id]
	r.conns[c.id] = c
	r.mu.Unlock()
	if old != nil {
		old.close()
	}
}

// remove unregisters c if it is still the worker's current stream.
func (r *WorkerSet) remove(c *workerConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns[c.id] == c {
		delete(r.conns, c.id)
		return true
	}
	return false
}

func (r *WorkerSet) all() []*workerConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*workerConn, 0, len(r.conns))
	for _, c := range r.conns {
		out = append(out, c)
	}
	return out
}

// workerConn is one worker's open stream.
type workerConn struct {
	id                   string
	provider             string
	cpuMillis, memoryMiB int64
	labels               map[string]string
	image                string
	slots                int
	prefetch             int  // attempts beyond slots the agent queues (Hello.prefetch)
	adaptive             bool // queue only what the worker finished in the last paceWindow (Hello.adaptive_prefetch)
	batches              bool // the agent accepts ResponseBatch frames

	out    chan *hodeiv1.ConnectResponse
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	running  map[int64]string // token -> job id, attempts holding a slot
	lastSeen time.Time
	// results holds when the latest results arrived, a ring whose next
	// entry to overwrite is resultAt: the worker's pace.
	results  [maxAdaptivePrefetch]time.Time
	resultAt int
	draining bool
	final    bool // the agent announced its final shutdown
	expired  bool // closed for silence past the lease
	cert     certState
	// agent holds the counters of the agent's latest heartbeat;
	// agentReported is false until one carried them.
	agent         agentCounters
	agentReported bool
}

// An adaptive worker's queue holds as many jobs as it finished in the last
// paceWindow, at most its prefetch and at most maxAdaptivePrefetch. Jobs
// that take a while get no queue, as without prefetch: a job queued behind
// a long one could not move to a worker that frees up meanwhile, and the
// autoscaler would not see it waiting. Short jobs get a queue deep enough
// to keep the slots busy until the next claim, and are then claimed, sent
// and reported in large batches.
const (
	paceWindow          = 100 * time.Millisecond
	maxAdaptivePrefetch = 128
)

// queueLimit is how many attempts beyond its slots the worker may hold.
// c.mu must be held.
func (c *workerConn) queueLimit(now time.Time) int {
	if !c.adaptive {
		return c.prefetch
	}
	recent := 0
	for _, t := range c.results {
		if now.Sub(t) < paceWindow {
			recent++
		}
	}
	return min(c.prefetch, maxAdaptivePrefetch, recent)
}

func (c *workerConn) send(m *hodeiv1.ConnectResponse) bool {
	select {
	case c.out <- m:
		return true
	case <-c.done:
		return false
	}
}

func (c *workerConn) close() { c.cancel() }

func (c *workerConn) touch(now time.Time) {
	c.mu.Lock()
	c.lastSeen = now
	c.mu.Unlock()
}

// resultArrived frees the slot of an attempt whose result has just been
// received: the agent counts it free as soon as the process ended, so the
// next claim for this worker can overlap the result's commit. (A result
// that fails to commit is sent again by the agent.)
func (c *workerConn) resultArrived(token int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.results[c.resultAt] = time.Now()
	c.resultAt = (c.resultAt + 1) % len(c.results)
	delete(c.running, token)
}

// Connected reports whether worker id has a stream on this replica.
func (r *WorkerSet) Connected(id string) bool { return r.get(id) != nil }

// setAgentCounters keeps the counters of the agent's latest heartbeat.
func (c *workerConn) setAgentCounters(ct *hodeiv1.AgentCounters) {
	c.mu.Lock()
	c.agent = agentCounters{reconnects: ct.Reconnects, reconnectSeconds: ct.ReconnectSeconds, logLines: ct.LogLines, logDropped: ct.LogLinesDropped}
	c.agentReported = true
	c.mu.Unlock()
}
