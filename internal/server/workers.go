package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/frame"
	"github.com/hodei-dev/hodei/internal/jobpb"
	"github.com/hodei-dev/hodei/internal/store"
)

type workerService struct{ s *Server }

func (h workerService) Enroll(ctx context.Context, req *connect.Request[hodeiv1.EnrollRequest]) (*connect.Response[hodeiv1.EnrollResponse], error) {
	m := req.Msg
	w, cred, err := h.s.store.Enroll(ctx, m.BootstrapToken, m.Hostname, m.Version, m.Labels, int(m.Slots), m.CpuMillis, m.MemoryMib)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.EnrollResponse{WorkerId: w.ID, Credential: cred, Settings: h.s.settings()}), nil
}

func (s *Server) settings() *hodeiv1.WorkerSettings {
	return &hodeiv1.WorkerSettings{HeartbeatInterval: durationpb.New(s.cfg.HeartbeatInterval), Batches: true}
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
	// A bound on Hello.prefetch: beyond it a worker would hoard jobs.
	const maxPrefetch = 10000
	if hello.Prefetch < 0 || hello.Prefetch > maxPrefetch {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("hello.prefetch: %d is out of range 0..%d", hello.Prefetch, maxPrefetch))
	}
	w, err := s.store.ConnectWorker(ctx, hello.WorkerId, hello.Credential, s.cfg.ReplicaID)
	if err != nil {
		return connectError(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &workerConn{id: w.ID, provider: w.Provider, cpuMillis: w.CPUMillis, memoryMiB: w.MemoryMiB, labels: w.Labels, image: w.Image, slots: w.Slots, prefetch: int(hello.Prefetch), adaptive: hello.AdaptivePrefetch, batches: hello.Batches, out: make(chan *hodeiv1.ConnectResponse, 256),
		cancel: cancel, done: make(chan struct{}), running: map[int64]string{}, lastSeen: time.Now()}
	defer close(c.done)
	log := s.log.With("worker_id", w.ID)

	// Reconcile: keep attempts that are still this worker's; cancel the rest.
	var cancels []int64
	listed := map[int64]bool{}
	for i, r := range hello.Running {
		jobID, err := parseJobID(fmt.Sprintf("hello.running[%d]", i), r.JobId)
		if err != nil {
			return err
		}
		listed[r.FencingToken] = true
		owned, err := s.store.OwnsAttempt(ctx, jobID, r.FencingToken, w.ID)
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
				msgs := []*hodeiv1.ConnectResponse{m}
				if c.batches {
					msgs = frame.Group(waiting(msgs, c.out), batchResponse)
				}
				for _, m := range msgs {
					if err := stream.Send(m); err != nil {
						sendErr <- err
						cancel()
						return
					}
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
	s.workers.wakeDispatch()

	msgs := make(chan *hodeiv1.ConnectRequest, 1024)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Receive()
			if err != nil {
				recvErr <- err
				return
			}
			batch := []*hodeiv1.ConnectRequest{m}
			if b := m.GetBatch(); b != nil {
				batch = b.Msgs
			}
			freed := false
			for _, m := range batch {
				switch m.Msg.(type) {
				case *hodeiv1.ConnectRequest_Batch, nil:
					recvErr <- connect.NewError(connect.CodeInvalidArgument, errors.New("message is empty, or a batch inside a batch"))
					return
				case *hodeiv1.ConnectRequest_Finished:
					c.resultArrived(m.GetFinished().FencingToken)
					freed = true
				}
				select {
				case msgs <- m:
				case <-ctx.Done():
					recvErr <- ctx.Err()
					return
				}
			}
			if freed {
				s.workers.wakeDispatch()
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			// Everything received before the error is queued: apply it
			// (e.g. the final shutdown notice just before EOF).
			var rest []*hodeiv1.ConnectRequest
			for len(msgs) > 0 {
				rest = append(rest, <-msgs)
			}
			if len(rest) > 0 {
				if aerr := s.applyReports(ctx, c, rest); aerr != nil {
					log.Warn("worker reports failed", "err", aerr)
				}
			}
			if errors.Is(err, context.Canceled) || isEOF(err) {
				return nil
			}
			return err
		case m := <-msgs:
			c.touch(time.Now())
			// Every report waiting now is applied in one transaction
			// (group commit), in order.
			batch := []*hodeiv1.ConnectRequest{m}
		more:
			for len(batch) < maxGroup {
				select {
				case m := <-msgs:
					batch = append(batch, m)
				default:
					break more
				}
			}
			if err := s.applyReports(ctx, c, batch); err != nil {
				log.Warn("worker reports failed", "err", err)
				return connectError(err)
			}
		}
	}
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// storableText makes an agent's text storable in PostgreSQL, which refuses
// NUL bytes and invalid UTF-8: otherwise one odd error message would fail
// its worker's every report batch, re-sent after each reconnect.
func storableText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// waiting adds to msgs the messages already waiting in out, up to
// frame.MaxMsgs in all: what one ResponseBatch frame can carry.
func waiting(msgs []*hodeiv1.ConnectResponse, out chan *hodeiv1.ConnectResponse) []*hodeiv1.ConnectResponse {
	for len(msgs) < frame.MaxMsgs {
		select {
		case m := <-out:
			msgs = append(msgs, m)
		default:
			return msgs
		}
	}
	return msgs
}

func batchResponse(msgs []*hodeiv1.ConnectResponse) *hodeiv1.ConnectResponse {
	return &hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_Batch{Batch: &hodeiv1.ResponseBatch{Msgs: msgs}}}
}

// maxGroup bounds the reports applied in one transaction.
const maxGroup = 512

func cancelMsg(token int64, reason string) *hodeiv1.ConnectResponse {
	return &hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_Cancel{Cancel: &hodeiv1.CancelAttempt{FencingToken: token, Reason: reason}}}
}

func ackMsg(a *hodeiv1.Ack) *hodeiv1.ConnectResponse {
	return &hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_Ack{Ack: a}}
}

// applyReports applies agent messages in order: attempt reports (start,
// logs, finish) in one transaction, then their acknowledgements and
// wake-ups. Stale reports are answered with a stale ack (the agent stops
// the attempt), not with an error.
func (s *Server) applyReports(ctx context.Context, c *workerConn, msgs []*hodeiv1.ConnectRequest) error {
	var reports []store.Report
	var lines []int // log lines per report, for the metric
	for _, m := range msgs {
		switch m.Msg.(type) {
		case *hodeiv1.ConnectRequest_Heartbeat:
		case *hodeiv1.ConnectRequest_Started, *hodeiv1.ConnectRequest_Logs, *hodeiv1.ConnectRequest_Finished:
			r, n, err := toReport(m)
			if err != nil {
				return err
			}
			reports, lines = append(reports, r), append(lines, n)
		case *hodeiv1.ConnectRequest_Shutdown:
			msg := m.GetShutdown()
			c.mu.Lock()
			c.draining = true
			c.final = c.final || msg.Final
			c.mu.Unlock()
			if !msg.Final {
				// No replica claims for a draining worker.
				if err := s.store.MarkDraining(ctx, c.id); err != nil {
					return err
				}
				if err := s.store.PublishEvents(ctx, workerShutdownEvent(c, msg.Forced)); err != nil {
					return err
				}
			}
		case *hodeiv1.ConnectRequest_Hello:
			return fmt.Errorf("hello sent twice")
		default:
			return fmt.Errorf("unknown message %T", m.Msg)
		}
	}
	if len(reports) == 0 {
		return nil
	}
	outcomes, err := s.commits.Apply(ctx, reports)
	if err != nil {
		return err
	}
	woken := map[string]bool{}
	wake := func(id string) {
		if !woken[id] {
			woken[id] = true
			s.logs.wake(id)
		}
	}
	for i, r := range reports {
		o := outcomes[i]
		switch {
		case r.Logs != nil:
			c.send(ackMsg(&hodeiv1.Ack{FencingToken: r.Token, LogSeq: r.Logs.Seq, Stale: o.Stale}))
			if !o.Stale {
				s.metrics.logLines.Add(float64(lines[i]))
				wake(r.JobID.String())
			}
		case r.Start:
			if o.StartDelay > 0 {
				s.metrics.toStarted.Observe(o.StartDelay.Seconds())
			}
			if o.Stale {
				c.send(ackMsg(&hodeiv1.Ack{FencingToken: r.Token, Stale: true}))
			}
		case r.Finish != nil:
			// Log followers learn the job's end from its final event
			// (Server.Run), on every replica.
			c.send(ackMsg(&hodeiv1.Ack{FencingToken: r.Token, Finished: true, Stale: o.Stale}))
		}
	}
	return nil
}

// toReport converts an agent's report about an attempt (started, logs or
// finished) into the store's form; n is its number of log lines. A report
// names its attempt by job id and fencing token.
func toReport(m *hodeiv1.ConnectRequest) (r store.Report, n int, err error) {
	switch msg := m.Msg.(type) {
	case *hodeiv1.ConnectRequest_Started:
		r = store.Report{Token: msg.Started.FencingToken, Start: true}
		r.JobID, err = parseJobID("started", msg.Started.JobId)
	case *hodeiv1.ConnectRequest_Logs:
		b := msg.Logs
		if r.JobID, err = parseJobID("logs", b.JobId); err != nil {
			return r, 0, err
		}
		data, err := proto.Marshal(&hodeiv1.LogBatch{Lines: b.Lines, Dropped: b.Dropped})
		if err != nil {
			return r, 0, err
		}
		r.Token, r.Logs, n = b.FencingToken, &store.LogBatchIn{JobID: r.JobID, Token: b.FencingToken, Seq: b.Seq, Lines: len(b.Lines), Data: data}, len(b.Lines)
	case *hodeiv1.ConnectRequest_Finished:
		f := msg.Finished
		r = store.Report{Token: f.FencingToken, Finish: &store.Result{ExitCode: int(f.ExitCode), Signal: storableText(f.Signal),
			Class: jobpb.ClassFromProto(f.FailureClass), Message: storableText(f.Message), LogBatches: f.LastLogSeq, LogLines: f.LinesSent, LogDropped: f.LinesDropped}}
		r.JobID, err = parseJobID("finished", f.JobId)
	default:
		err = fmt.Errorf("not an attempt report: %T", m.Msg)
	}
	return r, n, err
}

// parseJobID reads the job_id of an agent's message; field names the
// message in the error.
func parseJobID(field, id string) (uuid.UUID, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return u, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s.job_id: not a job id: %q", field, id))
	}
	return u, nil
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
