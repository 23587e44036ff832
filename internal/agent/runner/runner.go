//go:build unix

package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// DefaultGrace is the time between SIGTERM and SIGKILL when Spec.Grace
	// is not set.
	DefaultGrace = 10 * time.Second

	// readBufferSize is the size of the buffer each output stream is read
	// with, and so the largest slice passed to the output callback.
	readBufferSize = 32 << 10

	// drainIdleTimeout bounds how long Run keeps reading an output pipe
	// that stays silent after the process group has been killed. Only a
	// process that left the group (setsid, setpgid) can still hold the
	// pipe open at that point; without the bound it would hang Run.
	drainIdleTimeout = 2 * time.Second
)

// Spec describes a process to run.
type Spec struct {
	// Argv is the command line; it must not be empty. Argv[0] is looked up
	// in the PATH of Env if Env sets PATH, otherwise in the PATH of the
	// calling process. An Argv[0] containing a slash is used as is
	// (relative to Dir).
	Argv []string

	// Env is the complete environment of the process, as "KEY=VALUE"
	// entries. Nothing is inherited from the calling process: a nil or
	// empty Env gives the process an empty environment.
	Env []string

	// Dir is the working directory; empty means the caller's.
	Dir string

	// Timeout bounds the run time; the process group is then terminated
	// the same way as on cancellation. Zero means no timeout.
	Timeout time.Duration

	// MergeOutput gives the process one pipe for both stdout and stderr,
	// so out sees the bytes in exactly the order they were written, all
	// of them as StreamStdout. Separate pipes keep the stream of every
	// byte but not the order across the two streams.
	MergeOutput bool

	// Grace is the time between SIGTERM and SIGKILL when the process is
	// stopped because of cancellation or timeout. Zero or negative means
	// DefaultGrace.
	Grace time.Duration

	// Shim, when set, is the command the process is started through: Run
	// looks Argv[0] up as usual and starts Shim followed by the path found
	// and Argv, with ShimInput on a pipe as its stdin (closed after it).
	// The shim reads its input, puts /dev/null in its place and execs the
	// path (cmd/hodei's exec-shim). Neither is passed on anywhere else.
	Shim      []string
	ShimInput []byte

	// Started, if set, is called with the process ID right after the
	// process has started and before Run waits for it. The process is the
	// leader of its own process group, so pid is also the process group
	// ID. It is called on the goroutine that called Run.
	Started func(pid int)
}

// Result is the outcome of Run.
type Result struct {
	// ExitCode is the exit status of the process, or -1 if it was killed
	// by a signal or did not start (Err is then set).
	ExitCode int

	// Signal is the name of the signal that terminated the process, such
	// as "SIGKILL", or "" if it exited normally.
	Signal string

	// TimedOut reports that Spec.Timeout expired while the process was
	// running and Run therefore started terminating it.
	TimedOut bool

	// Cancelled reports that the caller's ctx was done while the process
	// was running and Run therefore started terminating it (or that ctx
	// was already done before the start, in which case Err is set too).
	Cancelled bool

	// Err reports why the process could not be started (for example
	// because Argv[0] was not found; errors.Is(Err, exec.ErrNotFound)
	// then holds) or, rarely, why waiting for it failed. It is nil when
	// the process ran, whatever its exit status.
	Err error
}

// Run starts the process described by spec and blocks until it has exited
// and its output has been fully drained.
//
// The process runs in a new process group with stdin connected to
// /dev/null. Its stdout and stderr are read through separate pipes (one
// pipe, as stdout, with spec.MergeOutput) with a
// 32 KiB buffer each, and every chunk read is passed to out with its stream:
// the bytes are raw (binary data and invalid UTF-8 are preserved) and arrive
// in order within each stream. The two streams are read on two goroutines,
// so out may be called concurrently for different streams; it may block,
// which stops reading that stream and so eventually blocks the process
// writing to it (backpressure). out must not retain p after returning. A
// nil out discards the output.
//
// When ctx is done or spec.Timeout expires while the process runs, Run
// sends SIGTERM to the whole process group and, if the group leader is
// still alive after spec.Grace, SIGKILL to it.
//
// As soon as the group leader has exited, for whatever reason, Run sends
// SIGKILL to its process group (before reaping the leader, so the group ID
// cannot have been reused): no process the job left behind in its group,
// such as a background "sleep 600 &", survives Run. Processes that moved to
// another process group or session are not tracked; if one of them keeps
// an output pipe open, Run stops reading that pipe once it has been silent
// for two seconds after the group was killed, discarding anything written
// to it later.
func Run(ctx context.Context, spec Spec, out func(s Stream, p []byte)) Result {
	if len(spec.Argv) == 0 {
		return Result{ExitCode: -1, Err: errors.New("start process: empty argv")}
	}
	if out == nil {
		out = func(Stream, []byte) {}
	}
	grace := spec.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}

	runCtx := ctx
	if spec.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, spec.Timeout)
		defer cancel()
	}
	if err := runCtx.Err(); err != nil {
		return Result{
			ExitCode:  -1,
			Cancelled: ctx.Err() != nil,
			TimedOut:  ctx.Err() == nil,
			Err:       fmt.Errorf("start process: %w", err),
		}
	}

	p, err := start(spec)
	if err != nil {
		return Result{ExitCode: -1, Err: err}
	}
	defer p.closePipes()
	p.stopWatching = context.AfterFunc(runCtx, func() { p.terminate(ctx, grace) })
	defer p.unwatch()

	var wg sync.WaitGroup
	wg.Go(func() { drain(p.stdout, StreamStdout, out, p.leaderGone) })
	if p.stderr != nil {
		wg.Go(func() { drain(p.stderr, StreamStderr, out, p.leaderGone) })
	}

	if spec.Started != nil {
		spec.Started(p.pid)
	}

	ws, waitErr := p.wait()
	wg.Wait()
	return p.result(ws, waitErr)
}

// process is a started process group: the leader's pid (= pgid), the read
// ends of its output pipes, and what Run knows about stopping it.
type process struct {
	pid            int
	stdout, stderr *os.File      // stderr is nil when merged into stdout
	leaderGone     chan struct{} // closed once the leader has exited

	// stopWatching ends the watch of Run's context (context.AfterFunc).
	stopWatching func() bool

	// mu orders the stop signals against the leader's exit: once exited
	// is set the leader may be reaped and its pid (= pgid) reused, so
	// neither the group nor the leader may be signalled any more.
	mu        sync.Mutex
	exited    bool
	cancelled bool
	timedOut  bool
	killTimer *time.Timer
}

// start opens the process's stdin and output pipes and starts it as the
// leader of a new process group.
func start(spec Spec) (*process, error) {
	stdin, err := devNull()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	argv := spec.Argv
	var feed func()
	if spec.Shim != nil {
		var r int
		if argv, r, feed, err = shimmed(spec); err != nil {
			return nil, err
		}
		defer syscall.Close(r)
		stdin = r
	}
	stdoutR, stdoutW, err := outputPipe()
	if err != nil {
		return nil, fmt.Errorf("create stdout pipe: %w", err)
	}
	var stderrR *os.File
	stderrW := stdoutW
	if !spec.MergeOutput {
		if stderrR, stderrW, err = outputPipe(); err != nil {
			stdoutR.Close()
			syscall.Close(stdoutW)
			return nil, fmt.Errorf("create stderr pipe: %w", err)
		}
	}

	// syscall.ForkExec, not os/exec or os.StartProcess: waiting and
	// stopping are Run's own, and those added a goroutine watching ctx, a
	// pidfd and a copy of the environment per process. A nil Env is an
	// empty environment at this level.
	attr := &syscall.ProcAttr{Dir: spec.Dir, Env: dedupEnv(spec.Env), Files: []uintptr{uintptr(stdin), uintptr(stdoutW), uintptr(stderrW)},
		Sys: &syscall.SysProcAttr{Setpgid: true}}
	pid, err := startProcess(argv, attr)
	if feed != nil {
		feed() // also when the start failed: it closes the pipe
	}
	syscall.Close(stdoutW)
	if stderrW != stdoutW {
		syscall.Close(stderrW)
	}
	if err != nil {
		stdoutR.Close()
		if stderrR != nil {
			stderrR.Close()
		}
		if werr := workdirError(spec.Dir); werr != nil {
			err = werr
		}
		return nil, fmt.Errorf("start process: %w", err)
	}
	return &process{pid: pid, stdout: stdoutR, stderr: stderrR, leaderGone: make(chan struct{})}, nil
}

// terminate stops the group when Run's context ends (ctx, the caller's,
// tells a cancellation from a timeout): SIGTERM to the group, and grace
// later SIGKILL to the leader if it still runs; its exit then brings the
// SIGKILL to the whole group (killGroup). So the group gets SIGTERM,
// grace, SIGKILL.
func (p *process) terminate(ctx context.Context, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return
	}
	if ctx.Err() != nil {
		p.cancelled = true
	} else {
		p.timedOut = true
	}
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	p.killTimer = time.AfterFunc(grace, p.killLeader)
}

// killLeader sends SIGKILL to the group leader unless it has exited.
func (p *process) killLeader() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

// unwatch ends the watch of Run's context and a pending SIGKILL.
func (p *process) unwatch() {
	p.stopWatching()
	p.mu.Lock()
	if p.killTimer != nil {
		p.killTimer.Stop()
	}
	p.mu.Unlock()
}

// wait waits for the group leader to exit, kills what it left in its
// group, and reaps it.
func (p *process) wait() (syscall.WaitStatus, error) {
	if waitExitedNoReap(p.pid) == nil {
		p.killGroup()
		return reap(p.pid)
	}
	// No way to wait without reaping: kill the group right after.
	// The pgid stays reserved as long as any member lives, so this
	// can only misfire if the group is already empty and the number
	// was reused in between.
	ws, err := reap(p.pid)
	p.killGroup()
	return ws, err
}

// killGroup sends SIGKILL to the process group once the leader has
// exited, and bounds the drain of output pipes that stay silent.
func (p *process) killGroup() {
	p.mu.Lock()
	p.exited = true
	// ESRCH is expected when the group is already empty.
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	p.mu.Unlock()
	close(p.leaderGone)
	// Wake readers blocked on a silent pipe; they re-arm the deadline
	// themselves after every chunk.
	deadline := time.Now().Add(drainIdleTimeout)
	_ = p.stdout.SetReadDeadline(deadline)
	if p.stderr != nil {
		_ = p.stderr.SetReadDeadline(deadline)
	}
}

// closePipes closes the read ends of the output pipes.
func (p *process) closePipes() {
	p.stdout.Close()
	if p.stderr != nil {
		p.stderr.Close()
	}
}

// result is Run's Result for the leader's wait status.
func (p *process) result(ws syscall.WaitStatus, waitErr error) Result {
	res := Result{ExitCode: -1}
	p.mu.Lock()
	res.Cancelled, res.TimedOut = p.cancelled, p.timedOut
	p.mu.Unlock()
	switch {
	case waitErr != nil:
		res.Err = fmt.Errorf("wait process: %w", waitErr)
	case ws.Exited():
		res.ExitCode = ws.ExitStatus()
	case ws.Signaled():
		res.Signal = signalName(ws.Signal())
	}
	return res
}

// reap waits for the child pid to exit and collects its status.
func reap(pid int) (syscall.WaitStatus, error) {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			return ws, err
		}
	}
}

// startProcess starts argv[0], resolved by lookPath in attr's environment.
// A file lookPath remembered is used without a check; if it cannot be
// executed any more (gone, or no longer executable), the name is looked
// up afresh and started once more.
func startProcess(argv []string, attr *syscall.ProcAttr) (int, error) {
	path, remembered, err := lookPath(argv[0], attr.Env)
	if err != nil {
		return 0, err
	}
	pid, err := forkExec(path, argv, attr)
	if err != nil && remembered && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EACCES)) {
		forgetPath(argv[0], attr.Env)
		if path, _, err = lookPath(argv[0], attr.Env); err != nil {
			return 0, err
		}
		pid, err = forkExec(path, argv, attr)
	}
	return pid, err
}

// forkExec is syscall.ForkExec with its error naming the file, as
// os.StartProcess does.
func forkExec(path string, argv []string, attr *syscall.ProcAttr) (int, error) {
	pid, err := syscall.ForkExec(path, argv, attr)
	if err != nil {
		return 0, &os.PathError{Op: "fork/exec", Path: path, Err: err}
	}
	return pid, nil
}

// drain copies f to out until EOF. Once leaderGone is closed, a read that
// stays idle for drainIdleTimeout ends it too.
func drain(f *os.File, s Stream, out func(Stream, []byte), leaderGone <-chan struct{}) {
	bp := readBuffers.Get().(*[readBufferSize]byte)
	defer readBuffers.Put(bp)
	buf := bp[:]
	for {
		select {
		case <-leaderGone:
			_ = f.SetReadDeadline(time.Now().Add(drainIdleTimeout))
		default:
		}
		n, err := f.Read(buf)
		if n > 0 {
			out(s, buf[:n])
		}
		if err != nil {
			// io.EOF: every writer is gone. os.ErrDeadlineExceeded: a
			// process outside the group holds the pipe. Anything else
			// cannot happen on a pipe we own; stop either way.
			return
		}
	}
}

// readBuffers holds drain's buffers: a new one per stream of every process
// was 64 KiB of garbage per job, most of the agent's garbage collection
// when jobs are short. out never keeps the slice it is given (Run's
// contract), so a buffer is free again when drain returns.
var readBuffers = sync.Pool{New: func() any { return new([readBufferSize]byte) }}

// devNull is every process's stdin, opened once: os/exec would open and
// close /dev/null for each process.
var devNull = sync.OnceValues(func() (int, error) {
	return syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
})

// dedupEnv returns env without the entries a later entry of the same key
// overrides (a process's getenv would see the first one), as os/exec
// does. A short environment without duplicates, the common case, is
// returned as it is.
func dedupEnv(env []string) []string {
	if len(env) <= 32 && !hasDuplicateKeys(env) {
		return env
	}
	out := make([]string, 0, len(env))
	seen := make(map[string]struct{}, len(env))
	for i := len(env) - 1; i >= 0; i-- {
		k, _, _ := strings.Cut(env[i], "=")
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, env[i])
	}
	slices.Reverse(out)
	return out
}

// hasDuplicateKeys compares env's keys pairwise: no map, for a short
// environment.
func hasDuplicateKeys(env []string) bool {
	for i, e := range env {
		k, _, _ := strings.Cut(e, "=")
		for _, later := range env[i+1:] {
			if lk, _, _ := strings.Cut(later, "="); lk == k {
				return true
			}
		}
	}
	return false
}

// envValue returns the value of the last key entry in env, which is the
// one a process sees after dedupEnv.
func envValue(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// signalName returns the conventional name of sig, such as "SIGKILL".
func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGALRM:
		return "SIGALRM"
	case syscall.SIGBUS:
		return "SIGBUS"
	case syscall.SIGCHLD:
		return "SIGCHLD"
	case syscall.SIGCONT:
		return "SIGCONT"
	case syscall.SIGFPE:
		return "SIGFPE"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGILL:
		return "SIGILL"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGIO:
		return "SIGIO"
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGPIPE:
		return "SIGPIPE"
	case syscall.SIGPROF:
		return "SIGPROF"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGSTOP:
		return "SIGSTOP"
	case syscall.SIGSYS:
		return "SIGSYS"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGTRAP:
		return "SIGTRAP"
	case syscall.SIGTSTP:
		return "SIGTSTP"
	case syscall.SIGTTIN:
		return "SIGTTIN"
	case syscall.SIGTTOU:
		return "SIGTTOU"
	case syscall.SIGURG:
		return "SIGURG"
	case syscall.SIGUSR1:
		return "SIGUSR1"
	case syscall.SIGUSR2:
		return "SIGUSR2"
	case syscall.SIGVTALRM:
		return "SIGVTALRM"
	case syscall.SIGWINCH:
		return "SIGWINCH"
	case syscall.SIGXCPU:
		return "SIGXCPU"
	case syscall.SIGXFSZ:
		return "SIGXFSZ"
	}
	return fmt.Sprintf("SIG%d", int(sig))
}
