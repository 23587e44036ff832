//go:build unix

package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

	// Grace is the time between SIGTERM and SIGKILL when the process is
	// stopped because of cancellation or timeout. Zero or negative means
	// DefaultGrace.
	Grace time.Duration

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
// /dev/null. Its stdout and stderr are read through separate pipes with a
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

	path, err := lookPath(spec.Argv[0], spec.Env)
	if err != nil {
		return Result{ExitCode: -1, Err: fmt.Errorf("start process: %w", err)}
	}

	stdin, err := devNull()
	if err != nil {
		return Result{ExitCode: -1, Err: fmt.Errorf("open %s: %w", os.DevNull, err)}
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return Result{ExitCode: -1, Err: fmt.Errorf("create stdout pipe: %w", err)}
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdoutR.Close()
		stdoutW.Close()
		return Result{ExitCode: -1, Err: fmt.Errorf("create stderr pipe: %w", err)}
	}
	defer stdoutR.Close()
	defer stderrR.Close()

	cmd := exec.CommandContext(runCtx, path)
	cmd.Args = append([]string(nil), spec.Argv...)
	cmd.Env = append([]string{}, spec.Env...) // non-nil: never inherit
	cmd.Dir = spec.Dir
	cmd.Stdin = stdin
	// *os.File values are handed to the child as they are: os/exec starts
	// no copying goroutines, so Wait returns as soon as the process has
	// exited and the reading below is entirely ours.
	cmd.Stdout = stdoutW
	cmd.Stderr = stderrW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	// mu orders Cancel's SIGTERM against the leader's exit: once exited is
	// set the leader may be reaped and its pid (= pgid) reused, so the
	// group must no longer be signalled.
	var (
		mu        sync.Mutex
		exited    bool
		cancelled bool
		timedOut  bool
	)
	cmd.Cancel = func() error {
		mu.Lock()
		defer mu.Unlock()
		if exited {
			return os.ErrProcessDone
		}
		if ctx.Err() != nil {
			cancelled = true
		} else {
			timedOut = true
		}
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return os.ErrProcessDone
			}
			return fmt.Errorf("signal process group: %w", err)
		}
		return nil
	}
	// Grace after Cancel, os/exec sends SIGKILL to the leader if it is
	// still running; its exit then triggers the SIGKILL to the whole group
	// below. So the group gets SIGTERM, Grace, SIGKILL.
	cmd.WaitDelay = grace

	err = cmd.Start()
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		return Result{ExitCode: -1, Err: fmt.Errorf("start process: %w", err)}
	}
	pid := cmd.Process.Pid

	leaderGone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { drain(stdoutR, StreamStdout, out, leaderGone) })
	wg.Go(func() { drain(stderrR, StreamStderr, out, leaderGone) })

	if spec.Started != nil {
		spec.Started(pid)
	}

	killGroup := func() {
		mu.Lock()
		exited = true
		// ESRCH is expected when the group is already empty.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		mu.Unlock()
		close(leaderGone)
		// Wake readers blocked on a silent pipe; they re-arm the deadline
		// themselves after every chunk.
		deadline := time.Now().Add(drainIdleTimeout)
		_ = stdoutR.SetReadDeadline(deadline)
		_ = stderrR.SetReadDeadline(deadline)
	}

	var waitErr error
	if waitExitedNoReap(pid) == nil {
		killGroup()
		waitErr = cmd.Wait()
	} else {
		// No way to wait without reaping: kill the group right after.
		// The pgid stays reserved as long as any member lives, so this
		// can only misfire if the group is already empty and the number
		// was reused in between.
		waitErr = cmd.Wait()
		killGroup()
	}
	wg.Wait()

	res := Result{ExitCode: -1}
	mu.Lock()
	res.Cancelled, res.TimedOut = cancelled, timedOut
	mu.Unlock()
	if ps := cmd.ProcessState; ps != nil {
		res.ExitCode = ps.ExitCode()
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Signal = signalName(ws.Signal())
		}
	}
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil, errors.As(waitErr, &exitErr):
	case errors.Is(waitErr, context.Canceled), errors.Is(waitErr, context.DeadlineExceeded):
		// The process exited successfully after being asked to stop;
		// Cancelled/TimedOut already say so.
	default:
		res.Err = fmt.Errorf("wait process: %w", waitErr)
	}
	return res
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

// lookPath resolves file like a shell in the process's environment would:
// in env's PATH if it sets one, else in the caller's PATH. Relative PATH
// entries are ignored, as exec.LookPath refuses them too.
//
// Like a shell's command hash, it remembers where a name was found in a
// given PATH: a repeat costs one stat of that file instead of one per PATH
// entry before it. A remembered file that is gone or no longer executable
// is looked up again; a newer file of the same name in an earlier PATH
// entry is not noticed (as in bash).
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	pathList, ok := envValue(env, "PATH")
	if !ok {
		pathList = os.Getenv("PATH")
	}
	key := pathList + "\x00" + file
	if p, ok := pathHash.get(key); ok && isExecutable(p) {
		return p, nil
	}
	for _, dir := range filepath.SplitList(pathList) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, file)
		if isExecutable(p) {
			pathHash.put(key, p)
			return p, nil
		}
	}
	return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// pathHash is lookPath's memory, bounded: when full it starts over.
var pathHash = hashTable{max: 1024}

type hashTable struct {
	mu  sync.Mutex
	m   map[string]string
	max int
}

func (h *hashTable) get(k string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.m[k]
	return v, ok
}

func (h *hashTable) put(k, v string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m) >= h.max {
		h.m = make(map[string]string)
	}
	h.m[k] = v
}

// devNull is every process's stdin, opened once: os/exec would open and
// close /dev/null for each process.
var devNull = sync.OnceValues(func() (*os.File, error) { return os.Open(os.DevNull) })

// envValue returns the value of the last key entry in env, which is the
// one os/exec passes on.
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
