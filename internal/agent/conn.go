package agent

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/frame"
	"github.com/hodei-dev/hodei/internal/pki"
)

// baseURL makes a server address (host:port or a URL) a URL: https://
// with a TLS identity.
func (a *Agent) baseURL(addr string) string { return pki.BaseURL(addr, a.id != nil) }

// enroll trades the bootstrap token for the worker's identity, trying the
// servers in turn.
func (a *Agent) enroll(ctx context.Context, hc *http.Client) error {
	host, _ := os.Hostname()
	req := &hodeiv1.EnrollRequest{BootstrapToken: a.cfg.BootstrapToken, Hostname: host,
		Version: a.cfg.Version, Labels: a.cfg.Labels, Slots: int32(a.cfg.Slots), CpuMillis: a.cfg.CPUMillis, MemoryMib: a.cfg.MemoryMiB}
	var key crypto.Signer
	if a.id != nil {
		var err error
		if key, req.Csr, err = newRequest(); err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
	}
	var lastErr error
	for _, s := range a.cfg.Servers {
		c := hodeiv1connect.NewWorkerServiceClient(hc, a.baseURL(s), connect.WithGRPC())
		rctx, cancel := context.WithTimeout(ctx, a.cfg.ConnectTimeout)
		resp, err := c.Enroll(rctx, connect.NewRequest(req))
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		a.workerID, a.credential = resp.Msg.WorkerId, resp.Msg.Credential
		if a.id == nil {
			return nil
		}
		if _, err := a.id.install(a.workerID, key, []byte(resp.Msg.Certificate), []byte(resp.Msg.TrustBundle)); err != nil {
			return fmt.Errorf("enroll: the certificate issued: %w", err)
		}
		return nil
	}
	return fmt.Errorf("enroll: %w", lastErr)
}

// connectLoop keeps a stream open, reconnecting with backoff 1, 2, 4 ...
// MaxBackoff seconds (with jitter), cycling through the servers.
func (a *Agent) connectLoop(ctx context.Context, hc *http.Client) {
	backoff := time.Second
	for gen := 1; ; gen++ {
		server := a.cfg.Servers[(gen-1)%len(a.cfg.Servers)]
		if a.id != nil {
			hc = a.id.httpClient() // the bundle of the moment
		}
		connected, err := a.session(ctx, hc, server, gen)
		if ctx.Err() != nil || a.isClosing() {
			return
		}
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			// The server no longer accepts this worker (terminated): it
			// must not run anything; exit.
			a.log.Error("the server refused this worker; exiting", "err", err)
			a.rejectOnce.Do(func() { close(a.rejected) })
			return
		}
		if connected {
			backoff = time.Second
			a.counters.lost(time.Now())
		}
		wait := a.retryIn(backoff)
		a.log.Warn("stream to server lost; reconnecting", "server", server, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64()))):
		}
		if !connected {
			backoff = min(backoff*2, a.cfg.MaxBackoff)
		}
	}
}

// retryIn is how long to wait before the next connection attempt: the
// backoff, but while the agent holds attempts at most a quarter of the
// silence after which it kills them, so that a server back in time is
// reached in time.
func (a *Agent) retryIn(backoff time.Duration) time.Duration {
	after := time.Duration(a.fenceAfter.Load())
	a.mu.Lock()
	busy := len(a.attempts) > 0
	a.mu.Unlock()
	if busy && after > 0 {
		return min(backoff, max(after/4, 100*time.Millisecond))
	}
	return backoff
}

// session runs one stream until it breaks.
func (a *Agent) session(ctx context.Context, hc *http.Client, server string, gen int) (connected bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.mu.Lock()
	a.endSession = cancel
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.endSession = nil
		a.mu.Unlock()
	}()
	c := hodeiv1connect.NewWorkerServiceClient(hc, a.baseURL(server), connect.WithGRPC())
	stream := c.Connect(ctx)
	defer stream.CloseRequest()
	// A server that accepted the connection but does not answer the
	// hello (blackholed, stalled) must not hold the agent: the next
	// server is tried. Over TLS the hello's send already waits for the
	// handshake, so the clock starts before it.
	helloTimer := time.AfterFunc(a.cfg.ConnectTimeout, cancel)
	if err := stream.Send(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Hello{Hello: a.hello()}}); err != nil {
		if !helloTimer.Stop() {
			return false, fmt.Errorf("no answer to the hello within %s: %w", a.cfg.ConnectTimeout, context.DeadlineExceeded)
		}
		return false, err
	}
	first, err := stream.Receive()
	if !helloTimer.Stop() {
		return false, fmt.Errorf("no answer to the hello within %s: %w", a.cfg.ConnectTimeout, context.DeadlineExceeded)
	}
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	a.stream = stream
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.stream = nil
		a.mu.Unlock()
	}()
	a.counters.welcomed(time.Now())
	a.log.Info("connected", "server", server)
	interval := 2 * time.Second
	if s := first.GetSettings(); s != nil && s.HeartbeatInterval != nil {
		interval = s.HeartbeatInterval.AsDuration()
	}
	batches := first.GetSettings().GetBatches()
	sendErr := make(chan error, 1)
	go func() { sendErr <- a.sender(ctx, stream, gen, interval, batches) }()
	// Cancelling ctx does not interrupt a Receive on an HTTP/2 stream that
	// already has its response: closing our side makes the server end the
	// stream, which ends the Receive.
	stopClose := context.AfterFunc(ctx, func() {
		a.sendMu.Lock()
		defer a.sendMu.Unlock()
		_ = stream.CloseRequest()
	})
	defer stopClose()
	a.handle(first)
	for {
		m, err := stream.Receive()
		if err != nil {
			cancel()
			<-sendErr
			return true, err
		}
		a.handle(m)
	}
}

// hello introduces this worker on a new stream. It lists every attempt
// the agent knows: running ones and finished ones whose reports wait in
// the outbox. The server re-sends attempts it assigned that are not listed
// (they never arrived).
func (a *Agent) hello() *hodeiv1.Hello {
	hello := &hodeiv1.Hello{WorkerId: a.workerID, Credential: a.credential, FreeSlots: int32(a.free()), Prefetch: int32(a.cfg.Prefetch), AdaptivePrefetch: a.cfg.AdaptivePrefetch, Batches: true}
	a.mu.Lock()
	// A new server (or one that lost this worker's stream) does not know
	// that this agent drains: the hello says so, before any job could be
	// handed out that this agent would refuse.
	hello.Draining = a.draining
	known := map[int64]bool{}
	for _, at := range a.attempts {
		known[at.token] = true
		hello.Running = append(hello.Running, &hodeiv1.RunningAttempt{JobId: at.jobID, Attempt: at.number, FencingToken: at.token})
	}
	a.mu.Unlock()
	for _, ra := range a.box.attempts() {
		if !known[ra.FencingToken] {
			hello.Running = append(hello.Running, ra)
		}
	}
	return hello
}

// sender sends unsent reports of the outbox and heartbeats.
// With batches (the server accepts them), the reports waiting together
// go as RequestBatch frames: one write for many.
func (a *Agent) sender(ctx context.Context, stream *connect.BidiStreamForClient[hodeiv1.ConnectRequest, hodeiv1.ConnectResponse], gen int, interval time.Duration, batches bool) error {
	hb := time.NewTicker(interval)
	defer hb.Stop()
	for {
		// Starts are taken after the outbox: a result in this round has its
		// start in it too, and the start goes first.
		unsent := a.box.unsent(gen)
		a.startMu.Lock()
		starts := a.starts
		a.starts = nil
		a.startMu.Unlock()
		for _, m := range frames(append(starts, unsent...), batches) {
			if err := a.send(stream, m); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.box.notify:
			// Let the goroutines that are ready add their reports first:
			// jobs started from one frame of the server report together.
			// Agent frames per 10,000 jobs: no-op mode 8,944 → 503,
			// process mode 5,338 → 2,159.
			runtime.Gosched()
		case <-hb.C:
			if err := a.send(stream, &hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Heartbeat{Heartbeat: &hodeiv1.Heartbeat{FreeSlots: int32(a.free()), Counters: a.counters.proto()}}}); err != nil {
				return err
			}
		}
	}
}

// frames groups msgs into RequestBatch frames (frame.Group), or returns
// them as they are to a server that does not accept batches.
func frames(msgs []*hodeiv1.ConnectRequest, batches bool) []*hodeiv1.ConnectRequest {
	if !batches {
		return msgs
	}
	return frame.Group(msgs, func(ms []*hodeiv1.ConnectRequest) *hodeiv1.ConnectRequest {
		return &hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Batch{Batch: &hodeiv1.RequestBatch{Msgs: ms}}}
	})
}

// send writes m on stream; sends on one stream are serialised.
func (a *Agent) send(stream *connect.BidiStreamForClient[hodeiv1.ConnectRequest, hodeiv1.ConnectResponse], m *hodeiv1.ConnectRequest) error {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	return stream.Send(m)
}

// sendNow sends a best-effort message on the current stream, if any.
func (a *Agent) sendNow(m *hodeiv1.ConnectRequest) {
	a.mu.Lock()
	s := a.stream
	a.mu.Unlock()
	if s != nil {
		_ = a.send(s, m)
	}
}

// sendStarted hands a start notice to the sender, which sends it with
// whatever else is waiting (best effort, like sendNow: dropped when no
// stream is up; the hello after a reconnect lists the attempt anyway).
func (a *Agent) sendStarted(m *hodeiv1.ConnectRequest) {
	a.mu.Lock()
	live := a.stream != nil
	a.mu.Unlock()
	if !live {
		return
	}
	a.startMu.Lock()
	a.starts = append(a.starts, m)
	a.startMu.Unlock()
	a.box.signal(a.box.notify)
}

// free is how many more attempts this worker accepts (slots and prefetch
// not taken).
func (a *Agent) free() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg.Slots + a.cfg.Prefetch - len(a.attempts)
}

// handle applies one message of the server (a batch, each of its own).
func (a *Agent) handle(m *hodeiv1.ConnectResponse) {
	switch msg := m.Msg.(type) {
	case *hodeiv1.ConnectResponse_Run:
		if a.cfg.OnRunJob != nil {
			a.cfg.OnRunJob(msg.Run.JobId)
		}
		a.start(msg.Run)
	case *hodeiv1.ConnectResponse_Cancel:
		a.stop(msg.Cancel.FencingToken, errors.New(msg.Cancel.Reason))
	case *hodeiv1.ConnectResponse_Ack:
		a.heard()
		a.box.ack(msg.Ack)
		if msg.Ack.Stale {
			a.stop(msg.Ack.FencingToken, errors.New("attempt is stale"))
		}
	case *hodeiv1.ConnectResponse_Drain:
		a.mu.Lock()
		a.draining = true
		a.mu.Unlock()
	case *hodeiv1.ConnectResponse_Settings:
		a.applySettings(msg.Settings)
		a.heard()
	case *hodeiv1.ConnectResponse_HeartbeatAck:
		a.heard()
	case *hodeiv1.ConnectResponse_RenewCertificate:
		a.renewCert()
	case *hodeiv1.ConnectResponse_Certificate:
		a.installCert(msg.Certificate)
	case *hodeiv1.ConnectResponse_Batch:
		for _, m := range msg.Batch.Msgs {
			if m.GetBatch() == nil {
				a.handle(m)
			}
		}
	}
}

func (a *Agent) hasStream() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stream != nil
}

func (a *Agent) isClosing() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closing
}
