// Package agent is the worker runtime: it enrolls with a one-time token,
// holds one Connect stream to a server, runs the attempts it is sent as
// process groups, batches their output, and reports results. Reports
// (log batches, results) stay in an outbox until the server acknowledges
// them and are re-sent after a reconnect, so none is lost. The agent never
// touches the database.
//
// What the agent guarantees about a job's processes (each attempt runs as
// its own process group):
//
//   - An attempt's processes end with it: when the group's leader exits,
//     whatever it left in its group is killed (runner.Run).
//   - They end with the agent too, however it dies (kill -9 included): a
//     guardian process (`hodei agent-guard`), started once with the agent
//     in its own process group, is told of each group as it starts and
//     ends, over a pipe; when the pipe reaches its end (the agent is gone)
//     or its parent-death signal comes, it sends SIGKILL to every group
//     still listed. Without a guardian (it could not start, or it died) the
//     agent says so in a warning and runs on without this guarantee.
//     Processes that leave their group (setsid, setpgid) are not followed.
//   - An agent cut off from every server kills its own jobs before the
//     server could fail and retry them (self-fencing): the server states
//     its lease in the settings and answers every heartbeat; after lease -
//     2 heartbeat intervals without an answer (fenceAfter has the
//     arithmetic) the agent sends SIGKILL to every attempt's group, ends
//     the attempts waiting for a slot, and reports them all as worker_lost
//     ("agent lost contact with the server for Ns") once it reconnects (a
//     server that already failed them refuses the reports as stale). An
//     answer before that changes nothing: the jobs run on.
//
// So a retry of an attempt lost with its worker never runs next to it, and
// fencing tokens keep a late report of a lost attempt from changing its
// job's result.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/frame"
	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/tracing"
)

// Config configures an agent.
type Config struct {
	Servers        []string // host:port or URLs; tried in turn
	BootstrapToken string
	// CA is the trust bundle (PEM) the server's certificate chains to:
	// the agent then speaks TLS only, enrolls with a certificate request
	// for a key it makes in memory, and presents the certificate it gets
	// on its stream. Empty: cleartext h2c (a server run with
	// --insecure-plaintext).
	CA     []byte
	Labels map[string]string
	Slots  int // concurrent attempts; default 1
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
	BatchLines       int           // HODEI_LOG_BATCH_SIZE; default 100, at most frame.MaxBatchLines
	FlushInterval    time.Duration // HODEI_LOG_FLUSH_INTERVAL; default 250ms
	Grace            time.Duration // SIGTERM -> SIGKILL for cancelled jobs; default 10s
	DrainTimeout     time.Duration // on shutdown, how long running jobs may finish; default 30s
	HardTimeout      time.Duration // on shutdown, when everything is killed; default DrainTimeout+Grace+10s
	MaxBackoff       time.Duration // reconnect backoff cap; default 60s
	// ConnectTimeout bounds the wait for a server's answer to an
	// enrollment or a stream's hello (a server that accepts connections
	// but never answers); the next server is tried. Default 10s.
	ConnectTimeout time.Duration
	Version        string
	Logger         *slog.Logger
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
	// GuardCommand is the command line of the guardian process (`hodei
	// agent-guard`), started once by Run: it kills the jobs' process
	// groups when the agent dies. Empty: no guardian.
	GuardCommand []string
	// Tracer records the agent's spans of the attempts whose RunJob
	// carries a traceparent; nil: none.
	Tracer *tracing.Tracer
	// ExecShim is the command line of the exec shim (`hodei exec-shim`)
	// that starts the jobs with secrets: it takes their values on its
	// stdin. Without it, attempts with secrets fail unstarted.
	ExecShim []string
}

// Agent is one worker.
type Agent struct {
	cfg Config
	log *slog.Logger

	workerID   string
	credential string
	id         *identity // nil: plaintext
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

	guard      *guard             // nil: no guardian
	endSession context.CancelFunc // ends the current stream (a.mu)
	epoch      time.Time          // contact is counted from here (monotonic)
	contact    atomic.Int64       // when the server was last heard, since epoch
	fenceAfter atomic.Int64       // silence after which the jobs are killed; 0: never
	guardUntil atomic.Int64       // the deadline last sent to the guardian, since epoch
	counters   counters
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
	// The server refuses frames beyond frame.MaxFrameBytes.
	cfg.BatchLines = min(cfg.BatchLines, frame.MaxBatchLines)
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
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
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
	return &Agent{cfg: cfg, log: cfg.Logger, box: newOutbox(512), slots: make(chan struct{}, cfg.Slots), attempts: map[int64]*attempt{}, epoch: time.Now(), retired: make(chan struct{}), rejected: make(chan struct{})}, nil
}

// Run enrolls and serves until ctx ends (a graceful shutdown follows) or
// the shutdown is forced. It returns ErrForced when it had to kill jobs
// past the hard deadline.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.startGuard(); err != nil {
		return err
	}
	defer a.guard.close()
	hc := pki.HTTPClient(nil) // cleartext h2c, unless a CA is given
	if len(a.cfg.CA) > 0 {
		id, err := newIdentity(a.cfg.CA)
		if err != nil {
			return fmt.Errorf("CA bundle: %w", err)
		}
		a.id, hc = id, id.httpClient()
	}
	if err := a.enroll(ctx, hc); err != nil {
		return err
	}
	// Jobs come over the connection: none starts before the guardian is
	// ready (it started while the agent enrolled).
	if err := a.guard.waitReady(guardReadyTimeout); err != nil {
		return err
	}
	a.log = a.log.With("worker_id", a.workerID)
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()
	go a.fenceLoop(connCtx)
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
		a.cancelAll(errors.New("the server refused this worker"))
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

// guardReadyTimeout is how long an agent waits for its guardian to be
// ready: it is a process start, longer only on a machine under heavy load.
const guardReadyTimeout = 30 * time.Second

// startGuard starts the guardian. An agent that cannot start it does not
// run jobs: killed, it would leave them running beside their retries.
func (a *Agent) startGuard() error {
	if len(a.cfg.GuardCommand) == 0 {
		return nil
	}
	g, err := startGuard(a.cfg.GuardCommand, func(err error) {
		a.log.Error("the guardian process is gone; jobs now outlive this agent if it is killed", "err", err)
	})
	if err != nil {
		return err
	}
	a.guard = g
	return nil
}

// ErrRejected is returned by Run when the server refuses the worker's
// identity (it was terminated): its jobs are stopped and it exits.
var ErrRejected = errors.New("the server refused this worker (terminated or unknown)")

// ErrForced is returned by Run when the shutdown had to kill jobs.
var ErrForced = errors.New("shutdown forced: jobs killed past the hard deadline")
