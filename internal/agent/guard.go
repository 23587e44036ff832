package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// guard is the agent's end of its guardian: a small process, started once
// with the agent, that kills every job's process group still listed when
// the agent dies, whatever killed it (kill -9 included). The agent tells it
// "+PGID" when a job's group starts and "-PGID" when it has ended, one
// pipe write each; the guardian acts when the pipe reaches end of file. The
// agent also sends "DNANOS", a deadline renewed while it hears the server:
// a frozen agent (SIGSTOP, a stall) cannot fence itself, so the guardian
// kills the listed groups when the deadline passes.
type guard struct {
	w      *os.File
	failed atomic.Bool // a write failed: the guardian is gone
	onFail func(error) // called once, on the first failed write
	once   sync.Once
	// ready is closed when the guardian has said it is ready (it handles
	// the parent-death signal) or is gone (readyErr).
	ready    chan struct{}
	readyErr error
}

// guardReadyLine is what the guardian writes to its standard output once
// it is ready.
const guardReadyLine = "ready\n"

// startGuard starts argv as the guardian, in its own process group (a
// signal to the agent's group does not reach it), its standard input the
// read end of the pipe. It gets a parent-death signal too, so that it never
// outlives the agent even if another process held the pipe open: the
// signal follows the thread that forked, so the start and the wait happen
// on one goroutine locked to its thread for the guardian's life.
func startGuard(argv []string, onFail func(error)) (*guard, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create guardian pipe: %w", err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("create guardian pipe: %w", err)
	}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the guardian's wait
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = r, readyW, os.Stderr
		cmd.SysProcAttr = guardProcAttr()
		err := cmd.Start()
		r.Close()
		readyW.Close()
		started <- err
		if err == nil {
			_ = cmd.Wait()
		}
	}()
	if err := <-started; err != nil {
		w.Close()
		readyR.Close()
		return nil, fmt.Errorf("start guardian %s: %w", argv[0], err)
	}
	g := &guard{w: w, onFail: onFail, ready: make(chan struct{})}
	go func() {
		defer readyR.Close()
		defer close(g.ready)
		buf := make([]byte, len(guardReadyLine))
		if _, err := io.ReadFull(readyR, buf); err != nil || string(buf) != guardReadyLine {
			g.readyErr = fmt.Errorf("guardian %s exited before it was ready (%q, %v)", argv[0], buf, err)
		}
	}()
	return g, nil
}

// waitReady waits until the guardian is ready, at most timeout. Until
// then a parent-death signal would kill it before it could act: a job
// started in that window would outlive a killed agent.
func (g *guard) waitReady(timeout time.Duration) error {
	if g == nil {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-g.ready:
		return g.readyErr
	case <-t.C:
		return fmt.Errorf("guardian not ready after %s", timeout)
	}
}

// add lists a job's process group with the guardian.
func (g *guard) add(pgid int) { g.write('+', int64(pgid)) }

// remove takes an ended job's process group off the guardian's list.
func (g *guard) remove(pgid int) { g.write('-', int64(pgid)) }

// renew tells the guardian when to kill the listed groups if it hears
// nothing more: "D" and the deadline in Unix nanoseconds.
func (g *guard) renew(deadline time.Time) { g.write('D', deadline.UnixNano()) }

// write sends one line, op and n; a line is shorter than PIPE_BUF, so concurrent
// writes never interleave.
func (g *guard) write(op byte, n int64) {
	if g == nil || g.failed.Load() {
		return
	}
	var buf [24]byte
	b := strconv.AppendInt(append(buf[:0], op), n, 10)
	if _, err := g.w.Write(append(b, '\n')); err != nil {
		g.failed.Store(true)
		g.once.Do(func() { g.onFail(err) })
	}
}

// close ends the pipe: the guardian kills what is still listed and exits.
func (g *guard) close() {
	if g != nil {
		_ = g.w.Close()
	}
}

// RunGuardian is the guardian process (`hodei agent-guard`): it reads
// "+PGID" and "-PGID" lines from in and, when in reaches its end (the
// agent exited or died) or the parent-death signal comes, sends SIGKILL to
// every process group still listed, then returns. Once it handles that
// signal it writes the ready line to ready and closes it.
func RunGuardian(in io.Reader, ready io.WriteCloser) error {
	parent := os.Getppid()
	g := &guardian{groups: map[int]struct{}{}}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if _, err := io.WriteString(ready, guardReadyLine); err != nil {
		return fmt.Errorf("guardian: say ready: %w", err)
	}
	ready.Close()
	go func() {
		for range sig {
			// The parent-death signal, or a stray one while the agent
			// lives (then ignored: the pipe says when the agent is gone).
			if os.Getppid() != parent {
				// The end of the pipe normally follows at once, and serve
				// reads the lines still in it first; act alone if another
				// process holds the pipe open.
				time.Sleep(time.Second)
				g.killAll()
				os.Exit(0)
			}
		}
	}()
	return g.serve(in)
}

// guardian is the guardian's list of the agent's job groups.
type guardian struct {
	mu     sync.Mutex
	groups map[int]struct{}
	// deadline kills the listed groups when the agent's last deadline
	// passes: the agent is alive but has not heard the server (or run at
	// all: SIGSTOP) for nearly the lease. A renewal after that sets a new
	// one. nil until the first.
	deadline *time.Timer
}

// guardPause is how long the guardian lets lines pile up in the pipe
// between reads: it needs the list only when the agent dies, and waking
// it for every line would cost a context switch per job start and end
// (the pipe holds thousands of lines; the agent dying is noticed at most
// this late).
const guardPause = 20 * time.Millisecond

// serve follows the lines of in until its end, then kills every group
// still listed.
func (g *guardian) serve(in io.Reader) error {
	defer g.killAll()
	buf := make([]byte, 64<<10)
	held := 0 // bytes of an unfinished line at the start of buf
	for {
		n, err := in.Read(buf[held:])
		lines := buf[:held+n]
		for {
			i := bytes.IndexByte(lines, '\n')
			if i < 0 {
				break
			}
			g.apply(lines[:i])
			lines = lines[i+1:]
		}
		held = copy(buf, lines)
		if held == len(buf) {
			held = 0 // not a line of ours
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read guardian pipe: %w", err)
		}
		time.Sleep(guardPause)
	}
}

// apply applies one line: "+PGID" lists a group, "-PGID" takes it off,
// "DNANOS" sets the deadline.
func (g *guardian) apply(line []byte) {
	if len(line) < 2 || (line[0] != '+' && line[0] != '-' && line[0] != 'D') {
		return
	}
	n, err := strconv.ParseInt(string(line[1:]), 10, 64)
	if err != nil || n <= 1 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	pgid := int(n)
	switch line[0] {
	case 'D':
		if d := time.Until(time.Unix(0, n)); g.deadline == nil {
			g.deadline = time.AfterFunc(d, g.killAll)
		} else {
			g.deadline.Reset(d)
		}
	case '+':
		g.groups[pgid] = struct{}{}
	default:
		delete(g.groups, pgid)
	}
}

// killAll sends SIGKILL to every listed group.
func (g *guardian) killAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for pgid := range g.groups {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	clear(g.groups)
}
