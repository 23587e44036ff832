package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/agent/runner"
	"github.com/hodei-dev/hodei/internal/frame"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/tracing"
)

// attempt is one attempt the agent holds, from its RunJob until its
// result is in the outbox.
type attempt struct {
	jobID  string
	number int32
	token  int64
	cancel context.CancelCauseFunc
	done   chan struct{}
	pgid   atomic.Int64 // the job's process group, once started
	fenced bool         // killed for the lost contact (a.mu)
	span   trace.Span   // the agent's span of the attempt; nil when not traced
}

// kill sends SIGKILL to the attempt's process group, if it started one.
func (at *attempt) kill() {
	if pgid := at.pgid.Load(); pgid > 0 {
		_ = syscall.Kill(-int(pgid), syscall.SIGKILL)
	}
}

// logBlockFor is how long a job's output may wait for room in the log
// buffer (slowing the job through its pipe) before the oldest lines are
// dropped.
const logBlockFor = 5 * time.Second

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
	if a.cfg.Tracer.Enabled() && r.Traceparent != "" {
		ctx, at.span = a.cfg.Tracer.Span(tracing.WithTraceparent(ctx, r.Traceparent), "run job", time.Now(),
			attribute.String("hodei.job_id", r.JobId), attribute.Int("hodei.attempt", int(r.Attempt)), attribute.String("hodei.worker_id", a.workerID))
	}
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
	go a.run(ctx, at, r)
}

// run waits for a slot and executes the attempt; a cancel or shutdown
// meanwhile (a prefetched attempt) ends it without starting it. The last
// attempt of a retiring agent retires it.
func (a *Agent) run(ctx context.Context, at *attempt, r *hodeiv1.RunJob) {
	defer a.wg.Done()
	defer close(at.done)
	if at.span != nil {
		defer at.span.End()
	}
	acquired := false
	select {
	case a.slots <- struct{}{}:
		acquired = true
	case <-ctx.Done():
	}
	if acquired && ctx.Err() == nil {
		a.execute(ctx, at, r)
	} else {
		a.notStarted(ctx, at)
	}
	if acquired {
		<-a.slots
	}
	forgetSecrets(r) // held in memory for the attempt only
	a.mu.Lock()
	delete(a.attempts, at.token)
	done := a.retiring && len(a.attempts) == 0
	a.mu.Unlock()
	if done {
		a.retireOnce.Do(func() { close(a.retired) })
	}
}

// stop cancels the attempt holding token, if the agent still runs it.
func (a *Agent) stop(token int64, cause error) {
	a.mu.Lock()
	at := a.attempts[token]
	a.mu.Unlock()
	if at != nil {
		at.cancel(cause)
	}
}

// finishedMsg is the AttemptFinished report of an attempt.
func finishedMsg(jobID string, token int64, exit int32, signal string, class hodeiv1.FailureClass, message string, lastSeq, sent, dropped int64) *hodeiv1.ConnectRequest {
	return &hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Finished{Finished: &hodeiv1.AttemptFinished{
		JobId: jobID, FencingToken: token, ExitCode: exit, Signal: signal, FailureClass: class, Message: message, Time: timestamppb.Now(),
		LastLogSeq: lastSeq, LinesSent: sent, LinesDropped: dropped}}}
}

// notStarted reports an attempt that was cancelled (or stopped by the
// shutdown) while it waited for a slot: it never started.
func (a *Agent) notStarted(ctx context.Context, at *attempt) {
	class, msg := stopped(ctx, "stopped by the worker's shutdown before it started")
	a.log.Info("attempt ended before it started", "job_id", at.jobID, "attempt", at.number, "class", class)
	a.box.add(&pending{jobID: at.jobID, token: at.token, finished: true, msg: finishedMsg(at.jobID, at.token, -1, "", class, msg, 0, 0, 0)})
}

// execute runs the process, streams its logs through the batcher (and the
// redactor, when the attempt has secrets) into the outbox, and queues the
// result after the last batch.
func (a *Agent) execute(ctx context.Context, at *attempt, r *hodeiv1.RunJob) {
	spec := r.Spec
	var red *redactor
	if len(r.Secrets) > 0 || r.SecretError != "" {
		var msg string
		if red, msg = a.prepareSecrets(r); red == nil {
			a.log.Warn("attempt not started", "job_id", at.jobID, "attempt", at.number, "reason", msg)
			a.box.add(&pending{jobID: at.jobID, token: at.token, finished: true, msg: finishedMsg(at.jobID, at.token, -1, "", hodeiv1.FailureClass_FAILURE_CLASS_INVALID, msg, 0, 0, 0)})
			return
		}
	}
	a.sendStarted(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Started{Started: &hodeiv1.AttemptStarted{JobId: at.jobID, FencingToken: at.token, Time: timestamppb.Now()}}})
	if a.cfg.NoopExec {
		a.box.add(&pending{jobID: at.jobID, token: at.token, finished: true, msg: finishedMsg(at.jobID, at.token, 0, "", 0, "noop execution (benchmark mode)", 0, 0, 0)})
		return
	}
	var lastSeq int64
	batcher := a.logBatcher(at, &lastSeq, red)
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
	if red != nil {
		write = red.wrap(write)
	}
	res := a.runProcess(ctx, at, r, red, write)
	if red != nil {
		red.flush() // what it held back: the output ended
	}
	batchOnce.Do(func() {}) // no loop starts after this
	batcher.Close()
	if batchDone != nil {
		<-batchDone
	}
	sent, dropped := batcher.Stats()
	a.counters.attemptEnded(sent, dropped)
	if at.span != nil {
		at.span.AddEvent("result", trace.WithAttributes(attribute.Int("exit_code", res.ExitCode), attribute.Int64("lines", sent), attribute.Int64("dropped", dropped)))
	}

	if silent, after := a.silence(), time.Duration(a.fenceAfter.Load()); after > 0 && silent >= after {
		// Past the fence (the guardian may have killed the process while
		// this agent was frozen): the attempt is lost, whatever it exited
		// with.
		at.cancel(&lostContact{silent: silent})
	}
	class, msg := outcome(ctx, spec, res)
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

// logBatcher returns the batcher of at's output: each batch goes to the
// outbox as a LogBatch report once the outbox has room, and *lastSeq
// follows the last one.
func (a *Agent) logBatcher(at *attempt, lastSeq *int64, red *redactor) *runner.Batcher {
	return runner.NewBatcher(runner.BatcherConfig{MaxLines: a.cfg.BatchLines, MaxLine: frame.MaxLineBytes, FlushInterval: a.cfg.FlushInterval, BlockFor: logBlockFor}, func(ctx context.Context, b runner.Batch) error {
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
		batch := &hodeiv1.LogBatch{JobId: at.jobID, FencingToken: at.token, Seq: b.Seq, Lines: lines, Dropped: b.Dropped}
		if red != nil {
			batch.Redactions = red.take()
		}
		a.box.add(&pending{jobID: at.jobID, token: at.token, seq: b.Seq, msg: &hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Logs{Logs: batch}}})
		*lastSeq = b.Seq
		return nil
	})
}

// runProcess runs the job's process with the agent's environment and the
// job's, its output going to write.
func (a *Agent) runProcess(ctx context.Context, at *attempt, r *hodeiv1.RunJob, red *redactor, write func(runner.Stream, []byte)) runner.Result {
	spec := r.Spec
	env := make([]string, 0, 4+len(spec.GetEnv()))
	env = append(env, "PATH="+os.Getenv("PATH"), "HOME="+os.Getenv("HOME"), "HODEI_JOB_ID="+at.jobID, "HODEI_ATTEMPT="+strconv.Itoa(int(at.number)))
	for k, v := range spec.GetEnv() {
		env = append(env, k+"="+v)
	}
	argv := job.Argv(spec.GetCommand(), spec.GetScript(), spec.GetInterpreter())
	var process trace.Span
	if at.span != nil {
		_, process = a.cfg.Tracer.Span(ctx, "process", time.Now(), attribute.String("hodei.job_id", at.jobID), attribute.String("hodei.program", argv[0]))
		defer func() { process.End() }()
	}
	res := runner.Run(ctx, runner.Spec{Argv: argv, Env: env, Dir: spec.GetWorkdir(), Timeout: spec.GetTimeout().AsDuration(), Grace: a.cfg.Grace,
		MergeOutput: spec.GetMergeOutput(), Shim: red.shim(), ShimInput: red.shimInput(),
		Started: func(pid int) {
			if process != nil {
				process.AddEvent("process started", trace.WithAttributes(attribute.Int("pid", pid)))
			}
			at.pgid.Store(int64(pid))
			a.guard.add(pid)
		}}, write)
	// Run killed the group before it returned.
	if pgid := at.pgid.Load(); pgid > 0 {
		a.guard.remove(int(pgid))
	}
	return res
}

// outcome classifies a finished process: the failure class and message of
// its result.
func outcome(ctx context.Context, spec *hodeiv1.JobSpec, res runner.Result) (hodeiv1.FailureClass, string) {
	var lost *lostContact
	switch {
	case errors.As(context.Cause(ctx), &lost), res.Cancelled:
		// Killed by the agent itself (self-fencing) whatever the process
		// made of it, or stopped.
		return stopped(ctx, "stopped by the worker's shutdown")
	case res.Err != nil:
		return hodeiv1.FailureClass_FAILURE_CLASS_INVALID, res.Err.Error()
	case res.TimedOut:
		return hodeiv1.FailureClass_FAILURE_CLASS_TIMEOUT, fmt.Sprintf("timed out after %s", spec.GetTimeout().AsDuration())
	case res.ExitCode != 0:
		return hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE, ""
	}
	return hodeiv1.FailureClass_FAILURE_CLASS_UNSPECIFIED, ""
}

// stopped is the failure class and message of an attempt ended by the
// cause of ctx: worker_lost when the agent fenced itself or shut down
// (shutdownMsg), cancelled otherwise.
func stopped(ctx context.Context, shutdownMsg string) (hodeiv1.FailureClass, string) {
	cause := context.Cause(ctx)
	var lost *lostContact
	switch {
	case errors.As(cause, &lost):
		return hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST, lost.Error()
	case errors.Is(cause, errShuttingDown):
		return hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST, shutdownMsg
	}
	return hodeiv1.FailureClass_FAILURE_CLASS_CANCELLED, cause.Error()
}
