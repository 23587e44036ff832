package server

import (
	"context"
	"time"
)

// afterDisconnect handles a stream that ended: a worker that said goodbye
// is terminated at once; otherwise its attempts are kept for the lease, so
// that it can reconnect (here or to another replica) and carry on.
func (s *Server) afterDisconnect(c *workerConn) {
	c.mu.Lock()
	final, expired := c.final, c.expired
	c.mu.Unlock()
	ctx := context.Background()
	if expired {
		s.expire(c.id, true)
		return
	}
	if final {
		if _, err := s.store.WorkerGone(ctx, c.id, "terminated", "worker shut down", true); err != nil {
			s.log.Error("worker gone", "worker_id", c.id, "err", err)
		}
		s.workers.wakeDispatch()
		return
	}
	s.log.Info("worker stream ended; lease running", "worker_id", c.id, "lease", s.cfg.Lease)
	time.AfterFunc(s.cfg.Lease, func() { s.expire(c.id, false) })
}

// expire fails a silent worker's attempts unless it came back (here, or
// to another replica). silent says this replica saw the worker silent for
// the whole lease, so its recorded last contact need not be checked.
func (s *Server) expire(id string, silent bool) {
	ctx := context.Background()
	if s.workers.get(id) != nil {
		return
	}
	w, err := s.store.GetWorker(ctx, id)
	if err != nil {
		s.log.Error("expire worker", "worker_id", id, "err", err)
		return
	}
	if w.ReplicaID != s.cfg.ReplicaID || w.State == "terminated" || (!silent && time.Since(w.LastSeen) < s.cfg.Lease) {
		return // reconnected elsewhere, already gone, or seen recently
	}
	jobs, err := s.store.WorkerGone(ctx, id, "disconnected", "lease expired", false)
	if err != nil {
		s.log.Error("expire worker", "worker_id", id, "err", err)
		return
	}
	s.log.Warn("worker lease expired", "worker_id", id, "lost_attempts", len(jobs))
	s.workers.wakeDispatch()
}
