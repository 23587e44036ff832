package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/frame"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
)

type workerService struct{ s *Server }

func (h workerService) Enroll(ctx context.Context, req *connect.Request[hodeiv1.EnrollRequest]) (*connect.Response[hodeiv1.EnrollResponse], error) {
	m := req.Msg
	e := store.Enrollment{Token: m.BootstrapToken, Hostname: m.Hostname, Version: m.Version, Labels: m.Labels, Slots: int(m.Slots),
		CPUMillis: m.CpuMillis, MemoryMiB: m.MemoryMib}
	a := h.s.cfg.Authority
	if a != nil {
		if len(m.Csr) == 0 {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("csr: a certificate request is required over TLS"))
		}
		e.Issue = func(id string) (store.Cert, error) {
			c, err := h.s.issue(m.Csr, id)
			if err != nil {
				return c, &job.FieldError{Field: "csr", Rule: err.Error()}
			}
			return c, nil
		}
	}
	w, cred, cert, err := h.s.store.Enroll(ctx, e)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.EnrollResponse{WorkerId: w.ID, Credential: cred, Settings: h.s.settings(), Certificate: string(cert.PEM)}
	if a != nil {
		resp.TrustBundle = string(a.Bundle())
	}
	return connect.NewResponse(resp), nil
}

func (s *Server) settings() *hodeiv1.WorkerSettings {
	return &hodeiv1.WorkerSettings{HeartbeatInterval: durationpb.New(s.cfg.HeartbeatInterval), Batches: true, Lease: durationpb.New(s.cfg.Lease)}
}

// Connect serves one worker's stream: authenticate the hello, reconcile
// the attempts the agent still runs, then receive reports until the
// stream ends. Reports are fenced by their attempt's token.
func (h workerService) Connect(ctx context.Context, stream *connect.BidiStream[hodeiv1.ConnectRequest, hodeiv1.ConnectResponse]) error {
	s := h.s
	hello, err := receiveHello(stream)
	if err != nil {
		return err
	}
	var serial string
	if s.cfg.Authority != nil {
		id, sn, err := peerWorker(ctx)
		if err != nil {
			return err
		}
		if id != hello.WorkerId {
			return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("hello.worker_id %s is not the client certificate's worker %s", hello.WorkerId, id))
		}
		serial = sn
	}
	w, err := s.store.ConnectWorker(ctx, hello.WorkerId, hello.Credential, serial, s.cfg.ReplicaID, hello.Draining)
	if err != nil {
		return connectError(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &workerConn{id: w.ID, provider: w.Provider, cpuMillis: w.CPUMillis, memoryMiB: w.MemoryMiB, labels: w.Labels, image: w.Image, slots: w.Slots, prefetch: int(hello.Prefetch), adaptive: hello.AdaptivePrefetch, batches: hello.Batches, draining: hello.Draining, out: make(chan *hodeiv1.ConnectResponse, 256),
		cancel: cancel, done: make(chan struct{}), running: map[int64]string{}, lastSeen: time.Now()}
	if st, _ := ctx.Value(peerKey{}).(*tls.ConnectionState); st != nil {
		c.cert = s.certOf(st)
	}
	defer close(c.done)
	log := s.log.With("worker_id", w.ID)

	cancels, resend, err := s.reconcile(ctx, c, hello.Running)
	if err != nil {
		return err
	}
	kept := len(c.running) // c is shared once added
	s.workers.add(c)
	defer func() {
		if s.workers.remove(c) {
			s.certMetrics.expiry.DeleteLabelValues("worker", c.id)
			s.afterDisconnect(c)
			s.forgetSecrets(c)
		}
	}()
	sendErr := c.sendLoop(ctx, stream)
	defer func() { cancel(); <-sendErr }()

	c.send(&hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_Settings{Settings: s.settings()}})
	for _, t := range cancels {
		c.send(cancelMsg(t, "attempt is no longer this worker's"))
	}
	if len(resend) > 0 {
		s.workers.Deliver(c.id, resend)
	}
	log.Info("worker connected", "kept_attempts", kept, "cancelled_attempts", len(cancels), "resent_attempts", len(resend))
	s.workers.wakeDispatch()

	msgs, recvErr := s.receiveLoop(ctx, c, stream)
	return s.serveReports(ctx, c, msgs, recvErr, log)
}

// receiveHello reads and checks the stream's first message.
func receiveHello(stream *connect.BidiStream[hodeiv1.ConnectRequest, hodeiv1.ConnectResponse]) (*hodeiv1.Hello, error) {
	first, err := stream.Receive()
	if err != nil {
		return nil, err
	}
	hello := first.GetHello()
	if hello == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("first message must be hello"))
	}
	// A bound on Hello.prefetch: beyond it a worker would hoard jobs.
	const maxPrefetch = 10000
	if hello.Prefetch < 0 || hello.Prefetch > maxPrefetch {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("hello.prefetch: %d is out of range 0..%d", hello.Prefetch, maxPrefetch))
	}
	return hello, nil
}

// reconcile keeps the attempts the agent runs that are still this
// worker's (in c.running), returns the tokens of those that are not (to
// cancel), and the worker's attempts the agent did not list (to send
// again).
func (s *Server) reconcile(ctx context.Context, c *workerConn, running []*hodeiv1.RunningAttempt) (cancels []int64, resend []store.Assignment, err error) {
	listed := map[int64]bool{}
	for i, r := range running {
		jobID, err := parseJobID(fmt.Sprintf("hello.running[%d]", i), r.JobId)
		if err != nil {
			return nil, nil, err
		}
		listed[r.FencingToken] = true
		owned, err := s.store.OwnsAttempt(ctx, jobID, r.FencingToken, c.id)
		if err != nil {
			return nil, nil, connectError(err)
		}
		if owned {
			c.running[r.FencingToken] = r.JobId
			if err := s.rememberSecrets(ctx, r.JobId, r.FencingToken); err != nil {
				return nil, nil, connectError(err)
			}
		} else {
			cancels = append(cancels, r.FencingToken)
		}
	}
	resend, err = s.store.UnlistedAttempts(ctx, c.id, listed)
	if err != nil {
		return nil, nil, connectError(err)
	}
	return cancels, resend, nil
}

// sendLoop sends what is queued for the worker (grouped into batch frames
// when the agent takes them) until ctx ends or a send fails, which
// cancels the stream. The channel receives once, when it is done.
func (c *workerConn) sendLoop(ctx context.Context, stream *connect.BidiStream[hodeiv1.ConnectRequest, hodeiv1.ConnectResponse]) <-chan error {
	done := make(chan error, 1)
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
						done <- err
						c.cancel()
						return
					}
				}
			case <-ctx.Done():
				done <- nil
				return
			}
		}
	}()
	return done
}

// receiveLoop reads the worker's messages (unpacking batch frames) into
// msgs until the stream ends; recvErr receives why. A result frees its
// slot at once and wakes the dispatcher.
func (s *Server) receiveLoop(ctx context.Context, c *workerConn, stream *connect.BidiStream[hodeiv1.ConnectRequest, hodeiv1.ConnectResponse]) (<-chan *hodeiv1.ConnectRequest, <-chan error) {
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
	return msgs, recvErr
}

// lastReportsTimeout bounds applying the reports that arrived just
// before a worker's stream ended.
const lastReportsTimeout = 10 * time.Second

// serveReports applies the worker's messages as they arrive, every
// report waiting at that moment in one transaction (group commit), in
// order, until the stream ends.
func (s *Server) serveReports(ctx context.Context, c *workerConn, msgs <-chan *hodeiv1.ConnectRequest, recvErr <-chan error, log *slog.Logger) error {
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
				// The stream's context may be cancelled already (the
				// connection broke): what arrived is applied all the same.
				actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lastReportsTimeout)
				aerr := s.applyReports(actx, c, rest)
				cancel()
				if aerr != nil {
					log.Warn("worker reports failed", "err", aerr)
				}
			}
			if errors.Is(err, context.Canceled) || isEOF(err) {
				return nil
			}
			return err
		case m := <-msgs:
			c.touch(time.Now())
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
