// Package agent is the worker runtime: it enrolls with a one-time token,
// holds one Connect stream to a server, runs the attempts it is sent as
// process groups, batches their output, and reports results. Reports
// (log batches, results) stay in an outbox until the server acknowledges
// them and are re-sent after a reconnect, so none is lost. The agent never
// touches the database.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/agent/runner"
	"github.com/hodei-dev/hodei/internal/frame"
)

// Config configures an agent.
type Config struct {
	Servers        []string // host:port or URLs; tried in turn
	BootstrapToken string
	Labels         map[string]string
	Slots          int // concurrent attempts; default 1
	// Prefetch is how many attempts beyond Slots the agent accepts; they
	// wait here and start when a slot frees (no idle slot while the next
	// job is claimed and sent). 0 suits long jobs: a queued job cannot
	// move to another worker that becomes free. (`hodei agent` defaults to
	// AdaptivePrefetch with a bound of 128.)
	Prefetch int
	// AdaptivePrefetch makes Prefetch a bound: the server queues here only
	// about as many jobs as this worker finished in the last 100 ms, so
	// short jobs get a queue (and large batches) and long ones none.
	AdaptivePrefetch bool
	BatchLines       int           // HODEI_LOG_BATCH_SIZE; default 100
	FlushInterval    time.Duration // HODEI_LOG_FLUSH_INTERVAL; default 250ms
	Grace            time.Duration // SIGTERM -> SIGKILL for cancelled jobs; default 10s
	DrainTimeout     time.Duration // on shutdown, how long running jobs may finish; default 30s
	HardTimeout      time.Duration // on shutdown, when everything is killed; default DrainTimeout+Grace+10s
	MaxBackoff       time.Duration // reconnect backoff cap; default 60s
	Version          string
	Logger           *slog.Logger
	// NoopExec skips the process and reports exit 0: a benchmark-only mode
	// that measures the control plane. Never the default.
	NoopExec bool
	// OnRunJob, if set, is called when a RunJob arrives (benchmarks).
	OnRunJob func(jobID string)
	// CPUMillis and MemoryMiB are the most one job may use here (0: not
	// stated); the server gives bigger jobs to other workers.
	CPUMillis, MemoryMiB int64
	// MaxJobs > 0 retires the agent after it started that many attempts:
	// it asks for no more work, finishes what it has, and exits 0
	// (ephemeral workers: --max-jobs 1).
	MaxJobs int
}

// Agent is one worker.
type Agent struct {
	cfg Config
	log *slog.Logger

	workerID   string
	credential string
	box        *outbox
	slots      chan struct{} // one token per running attempt (Slots)

	mu         sync.Mutex
	attempts   map[int64]*attempt
	draining   bool
	closing    bool // the final notice is sent: do not reconnect
	started    int  // attempts started, for MaxJobs
	retired    chan struct{}
	retireOnce sync.Once
	rejected   chan struct{}
	rejectOnce sync.Once
	retiring   bool
	stream     *connect.BidiStreamForClient[hodeiv1.ConnectRequest, hodeiv1.ConnectResponse]
	sendMu     sync.Mutex
	startMu    sync.Mutex
	starts     []*hodeiv1.ConnectRequest // AttemptStarted notices for the sender
	wg         sync.WaitGroup
}

type attempt struct {
	jobID  string
	number int32
	token  int64
	cancel context.CancelCauseFunc
	done   chan struct{}
	pgid   atomic.Int64 // the job's process group, once started
}

// New returns an agent.
func New(cfg Config) (*Agent, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("agent: no server address")
	}
	if cfg.BootstrapToken == "" {
		return nil, errors.New("agent: bootstrap token is required")
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	if cfg.BatchLines <= 0 {
		cfg.BatchLines = 100
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 250 * time.Millisecond
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.HardTimeout <= 0 {
		cfg.HardTimeout = cfg.DrainTimeout + cfg.Grace + 10*time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Prefetch < 0 {
		return nil, fmt.Errorf("agent: prefetch: %d is negative", cfg.Prefetch)
	}
	return &Agent{cfg: cfg, log: cfg.Logger, box: newOutbox(512), slots: make(chan struct{}, cfg.Slots), attempts: map[int64]*attempt{}, retired: make(chan struct{}), rejected: make(chan struct{})}, nil
}

func baseURL(addr string) string {
	if strings.Contains(addr, "://") {
		return addr
	}
	return "http://" + addr
}

// HTTPClient is an h2c client for plaintext gRPC.
func HTTPClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}

// Run enrolls and serves until ctx ends (a graceful shutdown follows) or
// the shutdown is forced. It returns ErrForced when it had to kill jobs
// past the hard deadline.
func (a *Agent) Run(ctx context.Context) error {
	hc := HTTPClient()
	if err := a.enroll(ctx, hc); err != nil {
		return err
	}
	a.log = a.log.With("worker_id", a.workerID)
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()
	connDone := make(chan struct{})
	go func() {
		defer close(connDone)
		a.connectLoop(connCtx, hc)
	}()
	select {
	case <-ctx.Done():
	case <-a.retired:
		a.log.Info("retiring after max jobs", "max_jobs", a.cfg.MaxJobs)
	case <-a.rejected:
		a.mu.Lock()
		for _, at := range a.attempts {
			at.cancel(errors.New("the server refused this worker"))
		}
		a.mu.Unlock()
		a.wg.Wait()
		stopConn()
		<-connDone
		return ErrRejected
	}
	err := a.shutdown()
	a.goodbye(connDone)
	stopConn()
	<-connDone
	return err
}

// goodbye ends the stream from our side after the final notice and waits
// (briefly) for the server to end it. Closing the request side delivers
// everything sent before it; cancelling the stream's context instead
// resets the HTTP/2 stream at once and can drop the last messages sent
// (the shutdown notices), so that the server never learns the worker left.
func (a *Agent) goodbye(connDone <-chan struct{}) {
	a.mu.Lock()
	a.closing = true
	s := a.stream
	a.mu.Unlock()
	if s == nil {
		return
	}
	a.sendMu.Lock()
	_ = s.CloseRequest()
	a.sendMu.Unlock()
	select {
	case <-connDone:
	case <-time.After(2 * time.Second):
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

// logBlockFor is how long a job's output may wait for room in the log
// buffer (slowing the job through its pipe) before the oldest lines are
// dropped.
const logBlockFor = 5 * time.Second

// ErrRejected is returned by Run when the server refuses the worker's
// identity (it was terminated): its jobs are stopped and it exits.
var ErrRejected = errors.New("the server refused this worker (terminated or unknown)")

// ErrForced is returned by Run when the shutdown had to kill jobs.
var ErrForced = errors.New("shutdown forced: jobs killed past the hard deadline")

// errShuttingDown is the cause of attempts stopped by the agent's own
// shutdown: they end as worker_lost (retryable), not as cancelled.
var errShuttingDown = errors.New("worker shutting down")

func (a *Agent) enroll(ctx context.Context, hc *http.Client) error {
	host, _ := os.Hostname()
	var lastErr error
	for _, s := range a.cfg.Servers {
		c := hodeiv1connect.NewWorkerServiceClient(hc, baseURL(s), connect.WithGRPC())
		resp, err := c.Enroll(ctx, connect.NewRequest(&hodeiv1.EnrollRequest{BootstrapToken: a.cfg.BootstrapToken, Hostname: host,
			Version: a.cfg.Version, Labels: a.cfg.Labels, Slots: int32(a.cfg.Slots), CpuMillis: a.cfg.CPUMillis, MemoryMib: a.cfg.MemoryMiB}))
		if err != nil {
			lastErr = err
			continue
		}
		a.workerID, a.credential = resp.Msg.WorkerId, resp.Msg.Credential
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
		}
		a.log.Warn("stream to server lost; reconnecting", "server", server, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))):
		}
		if !connected {
			backoff = min(backoff*2, a.cfg.MaxBackoff)
		}
	}
}

// session runs one stream until it breaks.
func (a *Agent) session(ctx context.Context, hc *http.Client, server string, gen int) (connected bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := hodeiv1connect.NewWorkerServiceClient(hc, baseURL(server), connect.WithGRPC())
	stream := c.Connect(ctx)
	defer stream.CloseRequest()
	hello := &hodeiv1.Hello{WorkerId: a.workerID, Credential: a.credential, FreeSlots: int32(a.free()), Prefetch: int32(a.cfg.Prefetch), AdaptivePrefetch: a.cfg.AdaptivePrefetch, Batches: true}
	// The hello lists every attempt this agent knows: running ones and
	// finished ones whose reports wait in the outbox. The server re-sends
	// attempts it assigned that are not listed (they never arrived).
	a.mu.Lock()
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
	if err := stream.Send(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		return false, err
	}
	first, err := stream.Receive()
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
			if err := a.send(stream, &hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Heartbeat{Heartbeat: &hodeiv1.Heartbeat{FreeSlots: int32(a.free())}}}); err != nil {
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

func (a *Agent) free() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg.Slots + a.cfg.Prefetch - len(a.attempts)
}

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
		a.box.ack(msg.Ack)
		if msg.Ack.Stale {
			a.stop(msg.Ack.FencingToken, errors.New("attempt is stale"))
		}
	case *hodeiv1.ConnectResponse_Drain:
		a.mu.Lock()
		a.draining = true
		a.mu.Unlock()
	case *hodeiv1.ConnectResponse_Settings:
	case *hodeiv1.ConnectResponse_Batch:
		for _, m := range msg.Batch.Msgs {
			if m.GetBatch() == nil {
				a.handle(m)
			}
		}
	}
}

func (a *Agent) stop(token int64, cause error) {
	a.mu.Lock()
	at := a.attempts[token]
	a.mu.Unlock()
	if at != nil {
		at.cancel(cause)
	}
}

// start runs an attempt in its own goroutine.
func (a *Agent) start(r *hodeiv1.RunJob) {
	a.mu.Lock()
	if _, dup := a.attempts[r.FencingToken]; dup {
		a.mu.Unlock()
		return
	}
	if a.draining {
		a.mu.Unlock()
		a.box.add(&pending{jobID: r.JobId, token: r.FencingToken, finished: true, msg: finishedMsg(r.JobId, r.FencingToken, -1, "", hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST, "worker is shutting down", 0, 0, 0)})
		return
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	at := &attempt{jobID: r.JobId, number: r.Attempt, token: r.FencingToken, cancel: cancel, done: make(chan struct{})}
	a.attempts[r.FencingToken] = at
	a.wg.Add(1)
	a.started++
	retire := a.cfg.MaxJobs > 0 && a.started == a.cfg.MaxJobs
	a.retiring = a.retiring || retire
	a.mu.Unlock()
	if retire {
		// Ask for no more work; a job already on its way still runs.
		a.sendNow(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Shutdown{Shutdown: &hodeiv1.ShutdownNotice{}}})
	}
	go func() {
		defer a.wg.Done()
		defer close(at.done)
		// Wait for a slot (a prefetched attempt); a cancel or shutdown
		// meanwhile ends it without starting it.
		acquired := false
		select {
		case a.slots <- struct{}{}:
			acquired = true
		case <-ctx.Done():
		}
		if acquired && ctx.Err() == nil {
			a.execute(ctx, at, r.Spec)
		} else {
			a.notStarted(ctx, at)
		}
		if acquired {
			<-a.slots
		}
		a.mu.Lock()
		delete(a.attempts, at.token)
		done := a.retiring && len(a.attempts) == 0
		a.mu.Unlock()
		if done {
			a.retireOnce.Do(func() { close(a.retired) })
		}
	}()
}

func finishedMsg(jobID string, token int64, exit int32, signal string, class hodeiv1.FailureClass, message string, lastSeq, sent, dropped int64) *hodeiv1.ConnectRequest {
	return &hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Finished{Finished: &hodeiv1.AttemptFinished{
		JobId: jobID, FencingToken: token, ExitCode: exit, Signal: signal, FailureClass: class, Message: message, Time: timestamppb.Now(),
		LastLogSeq: lastSeq, LinesSent: sent, LinesDropped: dropped}}}
}

// notStarted reports an attempt that was cancelled (or stopped by the
// shutdown) while it waited for a slot: it never started.
func (a *Agent) notStarted(ctx context.Context, at *attempt) {
	class, msg := hodeiv1.FailureClass_FAILURE_CLASS_CANCELLED, context.Cause(ctx).Error()
	if errors.Is(context.Cause(ctx), errShuttingDown) {
		class, msg = hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST, "stopped by the worker's shutdown before it started"
	}
	a.log.Info("attempt ended before it started", "job_id", at.jobID, "attempt", at.number, "class", class)
	a.box.add(&pending{jobID: at.jobID, token: at.token, finished: true, msg: finishedMsg(at.jobID, at.token, -1, "", class, msg, 0, 0, 0)})
}

// execute runs the process, streams its logs through the batcher into the
// outbox, and queues the result after the last batch.
func (a *Agent) execute(ctx context.Context, at *attempt, spec *hodeiv1.JobSpec) {
	a.sendStarted(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Started{Started: &hodeiv1.AttemptStarted{JobId: at.jobID, FencingToken: at.token, Time: timestamppb.Now()}}})
	if a.cfg.NoopExec {
		a.box.add(&pending{jobID: at.jobID, token: at.token, finished: true, msg: finishedMsg(at.jobID, at.token, 0, "", 0, "noop execution (benchmark mode)", 0, 0, 0)})
		return
	}
	var lastSeq int64
	batcher := runner.NewBatcher(runner.BatcherConfig{MaxLines: a.cfg.BatchLines, FlushInterval: a.cfg.FlushInterval, BlockFor: logBlockFor}, func(ctx context.Context, b runner.Batch) error {
		for a.box.full() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-a.box.space:
			case <-time.After(50 * time.Millisecond):
			}
		}
		lines := make([]*hodeiv1.LogLine, len(b.Lines))
		for i, l := range b.Lines {
			lines[i] = &hodeiv1.LogLine{Stream: hodeiv1.LogStream(l.Stream), Data: l.Data, Partial: l.Partial, Time: timestamppb.New(l.Time)}
		}
		a.box.add(&pending{jobID: at.jobID, token: at.token, seq: b.Seq, msg: &hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Logs{Logs: &hodeiv1.LogBatch{
			JobId: at.jobID, FencingToken: at.token, Seq: b.Seq, Lines: lines, Dropped: b.Dropped}}}})
		lastSeq = b.Seq
		return nil
	})
	// The batcher's loop starts with the first output: most short jobs
	// print nothing, and a goroutine, a context and a timer per job were
	// a visible part of the agent's CPU with them.
	var (
		batchOnce   sync.Once
		batchDone   chan error
		stopBatcher context.CancelFunc = func() {}
	)
	defer func() { stopBatcher() }()
	write := func(s runner.Stream, p []byte) {
		batchOnce.Do(func() {
			var bctx context.Context
			bctx, stopBatcher = context.WithCancel(context.Background())
			batchDone = make(chan error, 1)
			go func() { batchDone <- batcher.Run(bctx) }()
		})
		batcher.Write(s, p)
	}

	env := make([]string, 0, 4+len(spec.GetEnv()))
	env = append(env, "PATH="+os.Getenv("PATH"), "HOME="+os.Getenv("HOME"), "HODEI_JOB_ID="+at.jobID, "HODEI_ATTEMPT="+strconv.Itoa(int(at.number)))
	for k, v := range spec.GetEnv() {
		env = append(env, k+"="+v)
	}
	argv := spec.GetCommand()
	if spec.GetScript() != "" {
		interp := spec.GetInterpreter()
		if interp == "" {
			interp = "/bin/sh"
		}
		argv = []string{interp, "-c", spec.GetScript()}
	}
	res := runner.Run(ctx, runner.Spec{Argv: argv, Env: env, Dir: spec.GetWorkdir(), Timeout: spec.GetTimeout().AsDuration(), Grace: a.cfg.Grace,
		Started: func(pid int) { at.pgid.Store(int64(pid)) }}, write)
	batchOnce.Do(func() {}) // no loop starts after this
	batcher.Close()
	if batchDone != nil {
		<-batchDone
	}
	sent, dropped := batcher.Stats()

	class := hodeiv1.FailureClass_FAILURE_CLASS_UNSPECIFIED
	msg := ""
	switch {
	case res.Err != nil && !res.Cancelled:
		class, msg = hodeiv1.FailureClass_FAILURE_CLASS_INVALID, res.Err.Error()
	case res.TimedOut:
		class, msg = hodeiv1.FailureClass_FAILURE_CLASS_TIMEOUT, fmt.Sprintf("timed out after %s", spec.GetTimeout().AsDuration())
	case res.Cancelled && errors.Is(context.Cause(ctx), errShuttingDown):
		class, msg = hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST, "stopped by the worker's shutdown"
	case res.Cancelled:
		class, msg = hodeiv1.FailureClass_FAILURE_CLASS_CANCELLED, context.Cause(ctx).Error()
	case res.ExitCode != 0:
		class = hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE
	}
	// One line per job is the server's record (events, attempts), not the
	// agent's log: here it is a debug line, except when the agent could
	// not run the command at all.
	level := slog.LevelDebug
	if res.Err != nil && !res.Cancelled {
		level = slog.LevelWarn
	}
	a.log.Log(ctx, level, "attempt finished", "job_id", at.jobID, "attempt", at.number, "exit_code", res.ExitCode, "signal", res.Signal, "class", class, "lines", sent, "dropped", dropped)
	a.box.add(&pending{jobID: at.jobID, token: at.token, finished: true, msg: finishedMsg(at.jobID, at.token, int32(res.ExitCode), res.Signal, class, msg, lastSeq, sent, dropped)})
}

// shutdown drains: announce, stop taking jobs, let running jobs finish
// until the drain deadline, cancel the rest, flush reports (at most 5 s),
// say goodbye. Past the hard deadline it kills everything.
func (a *Agent) shutdown() error {
	start := time.Now()
	a.mu.Lock()
	a.draining = true
	n := len(a.attempts)
	a.mu.Unlock()
	a.log.Info("shutting down", "running", n)
	// A signal right after start can come before the stream is up: give it
	// a moment, so that the server hears the notices.
	for deadline := time.Now().Add(2 * time.Second); !a.hasStream() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	a.sendNow(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Shutdown{Shutdown: &hodeiv1.ShutdownNotice{}}})

	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	forced := false
	select {
	case <-done:
	case <-time.After(a.cfg.DrainTimeout):
		a.mu.Lock()
		for _, at := range a.attempts {
			at.cancel(errShuttingDown)
		}
		a.mu.Unlock()
		select {
		case <-done:
		case <-time.After(max(a.cfg.HardTimeout-time.Since(start), 0)):
			// Past the hard deadline: kill every job's process group now.
			// Announced first, so that the server counts the jobs still
			// running and applies the notice before the last reports.
			forced = true
			a.sendNow(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Shutdown{Shutdown: &hodeiv1.ShutdownNotice{Forced: true}}})
			a.mu.Lock()
			for _, at := range a.attempts {
				if pgid := at.pgid.Load(); pgid > 0 {
					_ = syscall.Kill(-int(pgid), syscall.SIGKILL)
				}
			}
			a.mu.Unlock()
			select {
			case <-done:
			case <-time.After(time.Second):
			}
		}
	}
	flushBy := time.Now().Add(5 * time.Second)
	for a.box.len() > 0 && time.Now().Before(flushBy) {
		select {
		case <-a.box.space:
		case <-time.After(50 * time.Millisecond):
		}
	}
	a.sendNow(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Shutdown{Shutdown: &hodeiv1.ShutdownNotice{Final: true, Forced: forced}}})
	if forced {
		return ErrForced
	}
	return nil
}
