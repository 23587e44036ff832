package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
)

type workerService struct{ s *Server }

func (h workerService) Enroll(ctx context.Context, req *connect.Request[hodeiv1.EnrollRequest]) (*connect.Response[hodeiv1.EnrollResponse], error) {
	m := req.Msg
	w, cred, err := h.s.store.Enroll(ctx, m.BootstrapToken, m.Hostname, m.Version, m.Labels, int(m.Slots))
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.EnrollResponse{WorkerId: w.ID, Credential: cred, Settings: h.s.settings()}), nil
}

func (s *Server) settings() *hodeiv1.WorkerSettings {
	return &hodeiv1.WorkerSettings{HeartbeatInterval: durationpb.New(s.cfg.HeartbeatInterval)}
}

// Connect serves one worker's stream: authenticate the hello, reconcile
// the attempts the agent still runs, then receive reports until the
// stream ends. Reports are fenced by their attempt's token.
func (h workerService) Connect(ctx context.Context, stream *connect.BidiStream[hodeiv1.ConnectRequest, hodeiv1.ConnectResponse]) error {
	s := h.s
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("first message must be hello"))
	}
	w, err := s.store.ConnectWorker(ctx, hello.WorkerId, hello.Credential, s.cfg.ReplicaID)
	if err != nil {
		return connectError(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &workerConn{id: w.ID, labels: w.Labels, image: w.Image, slots: w.Slots, out: make(chan *hodeiv1.ConnectResponse, 256),
		cancel: cancel, done: make(chan struct{}), running: map[int64]string{}, lastSeen: time.Now()}
	defer close(c.done)
	log := s.log.With("worker_id", w.ID)

	// Reconcile: keep attempts that are still this worker's; cancel the rest.
	var cancels []int64
	listed := map[int64]bool{}
	for _, r := range hello.Running {
		listed[r.FencingToken] = true
		owned, err := s.store.OwnsAttempt(ctx, r.FencingToken, w.ID)
		if err != nil {
			return connectError(err)
		}
		if owned {
			c.running[r.FencingToken] = r.JobId
		} else {
			cancels = append(cancels, r.FencingToken)
		}
	}
	resend, err := s.store.UnlistedAttempts(ctx, w.ID, listed)
	if err != nil {
		return connectError(err)
	}
	s.workers.add(c)
	defer func() {
		if s.workers.remove(c) {
			s.afterDisconnect(c)
		}
	}()

	sendErr := make(chan error, 1)
	go func() {
		for {
			select {
			case m := <-c.out:
				if err := stream.Send(m); err != nil {
					sendErr <- err
					cancel()
					return
				}
			case <-ctx.Done():
				sendErr <- nil
				return
			}
		}
	}()
	defer func() { cancel(); <-sendErr }()

	c.send(&hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_Settings{Settings: s.settings()}})
	for _, t := range cancels {
		c.send(cancelMsg(t, "attempt is no longer this worker's"))
	}
	if len(resend) > 0 {
		s.workers.Deliver(c.id, resend)
	}
	log.Info("worker connected", "kept_attempts", len(c.running), "cancelled_attempts", len(cancels), "resent_attempts", len(resend))
	s.workers.capacity()

	msgs := make(chan *hodeiv1.ConnectRequest, 1024)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Receive()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				recvErr <- ctx.Err()
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, context.Canceled) || isEOF(err) {
				return nil
			}
			return err
		case m := <-msgs:
			c.touch(time.Now())
			// Reports are applied in order. Log batches waiting together
			// are stored in one statement (group commit).
			var logs []*hodeiv1.LogBatch
			for m != nil {
				if l := m.GetLogs(); l != nil && len(logs) < maxGroup {
					logs = append(logs, l)
					select {
					case m = <-msgs:
					default:
						m = nil
					}
					continue
				}
				if err := s.storeLogs(ctx, c, logs); err != nil {
					log.Warn("store logs failed", "err", err)
					return connectError(err)
				}
				logs = logs[:0]
				if err := s.handleReport(ctx, c, m); err != nil {
					log.Warn("worker report failed", "err", err)
					return connectError(err)
				}
				m = nil
			}
			if err := s.storeLogs(ctx, c, logs); err != nil {
				log.Warn("store logs failed", "err", err)
				return connectError(err)
			}
		}
	}
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// maxGroup bounds the log batches stored in one statement.
const maxGroup = 256

// storeLogs stores log batches in one statement, acknowledges each (stale
// ones as stale, which stops their attempt) and wakes followers.
func (s *Server) storeLogs(ctx context.Context, c *workerConn, batches []*hodeiv1.LogBatch) error {
	if len(batches) == 0 {
		return nil
	}
	in := make([]store.LogBatchIn, len(batches))
	for i, b := range batches {
		data, err := proto.Marshal(&hodeiv1.LogBatch{Lines: b.Lines, Dropped: b.Dropped})
		if err != nil {
			return err
		}
		in[i] = store.LogBatchIn{Token: b.FencingToken, Seq: b.Seq, Lines: len(b.Lines), Data: data}
	}
	stale, err := s.store.AppendLogBatches(ctx, in)
	if err != nil {
		return err
	}
	woken := map[string]bool{}
	for _, b := range batches {
		if stale[b.FencingToken] {
			c.send(ackMsg(&hodeiv1.Ack{FencingToken: b.FencingToken, LogSeq: b.Seq, Stale: true}))
			continue
		}
		s.metrics.logLines.Add(float64(len(b.Lines)))
		if id := c.jobOf(b.FencingToken); id != "" && !woken[id] {
			woken[id] = true
			s.logs.wake(id)
		}
		c.send(ackMsg(&hodeiv1.Ack{FencingToken: b.FencingToken, LogSeq: b.Seq}))
	}
	return nil
}

func cancelMsg(token int64, reason string) *hodeiv1.ConnectResponse {
	return &hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_Cancel{Cancel: &hodeiv1.CancelAttempt{FencingToken: token, Reason: reason}}}
}

func ackMsg(a *hodeiv1.Ack) *hodeiv1.ConnectResponse {
	return &hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_Ack{Ack: a}}
}

// handleReport applies one agent message. Stale reports are answered with
// a stale ack (the agent stops the attempt), not with an error.
func (s *Server) handleReport(ctx context.Context, c *workerConn, m *hodeiv1.ConnectRequest) error {
	switch msg := m.Msg.(type) {
	case *hodeiv1.ConnectRequest_Heartbeat:
		return nil
	case *hodeiv1.ConnectRequest_Started:
		err := s.store.StartAttempt(ctx, msg.Started.FencingToken)
		if errors.Is(err, job.ErrStale) {
			c.send(ackMsg(&hodeiv1.Ack{FencingToken: msg.Started.FencingToken, Stale: true}))
			return nil
		}
		return err
	case *hodeiv1.ConnectRequest_Logs:
		return s.storeLogs(ctx, c, []*hodeiv1.LogBatch{msg.Logs})
	case *hodeiv1.ConnectRequest_Finished:
		f := msg.Finished
		jobID := c.jobOf(f.FencingToken)
		out, err := s.store.FinishAttempt(ctx, f.FencingToken, store.Result{ExitCode: int(f.ExitCode), Signal: f.Signal,
			Class: classFromProto(f.FailureClass), Message: f.Message})
		stale := errors.Is(err, job.ErrStale)
		if err != nil && !stale {
			return err
		}
		if stale {
		}
		c.release(f.FencingToken)
		c.send(ackMsg(&hodeiv1.Ack{FencingToken: f.FencingToken, Finished: true, Stale: stale}))
		if jobID == "" {
			jobID = out.JobID
		}
		if jobID != "" {
			s.logs.wake(jobID)
		}
		s.workers.capacity()
		return nil
	case *hodeiv1.ConnectRequest_Shutdown:
		c.mu.Lock()
		c.draining = true
		c.final = c.final || msg.Shutdown.Final
		c.mu.Unlock()
		if !msg.Shutdown.Final {
			return s.store.PublishEvents(ctx, workerShutdownEvent(c, msg.Shutdown.Forced))
		}
		return nil
	case *hodeiv1.ConnectRequest_Hello:
		return fmt.Errorf("hello sent twice")
	}
	return fmt.Errorf("unknown message %T", m.Msg)
}

func workerShutdownEvent(c *workerConn, forced bool) eventbus.Event {
	c.mu.Lock()
	n := len(c.running)
	c.mu.Unlock()
	if forced {
		return eventbus.New("worker", c.id, &hodeiv1.WorkerShutdownForced{WorkerId: c.id, KilledJobs: int32(n)})
	}
	return eventbus.New("worker", c.id, &hodeiv1.WorkerGracefulShutdown{WorkerId: c.id, RunningJobs: int32(n)})
}

// afterDisconnect handles a stream that ended: a worker that said goodbye
// is terminated at once; otherwise its attempts are kept for the lease, so
// that it can reconnect (here or to another replica) and carry on.
func (s *Server) afterDisconnect(c *workerConn) {
	c.mu.Lock()
	final, expired := c.final, c.expired
	c.mu.Unlock()
	ctx := context.Background()
	if expired {
		s.expire(c.id)
		return
	}
	if final {
		if _, err := s.store.WorkerGone(ctx, c.id, "terminated", "worker shut down", true); err != nil {
			s.log.Error("worker gone", "worker_id", c.id, "err", err)
		}
		s.workers.capacity()
		return
	}
	s.log.Info("worker stream ended; lease running", "worker_id", c.id, "lease", s.cfg.Lease)
	time.AfterFunc(s.cfg.Lease, func() { s.expire(c.id) })
}

// expire fails a silent worker's attempts unless it came back.
func (s *Server) expire(id string) {
	ctx := context.Background()
	if s.workers.get(id) != nil {
		return
	}
	w, err := s.store.GetWorker(ctx, id)
	if err != nil {
		s.log.Error("expire worker", "worker_id", id, "err", err)
		return
	}
	if w.ReplicaID != s.cfg.ReplicaID || w.State == "terminated" || time.Since(w.LastSeen) < s.cfg.Lease {
		return // reconnected elsewhere, already gone, or seen recently
	}
	jobs, err := s.store.WorkerGone(ctx, id, "disconnected", "lease expired", false)
	if err != nil {
		s.log.Error("expire worker", "worker_id", id, "err", err)
		return
	}
	s.log.Warn("worker lease expired", "worker_id", id, "lost_attempts", len(jobs))
	s.workers.capacity()
}
