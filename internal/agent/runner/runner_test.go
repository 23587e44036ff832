//go:build unix

package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// output collects what Run passes to its callback.
type output struct {
	mu      sync.Mutex
	streams map[Stream][]byte
	notify  chan struct{} // 1-buffered, pinged after every chunk
}

func newOutput() *output {
	return &output{streams: map[Stream][]byte{}, notify: make(chan struct{}, 1)}
}

func (o *output) write(s Stream, p []byte) {
	o.mu.Lock()
	o.streams[s] = append(o.streams[s], p...)
	o.mu.Unlock()
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

func (o *output) get(s Stream) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.streams[s])
}

// waitContains waits until stream s contains sub.
func (o *output) waitContains(t *testing.T, s Stream, sub string, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !strings.Contains(o.get(s), sub) {
		select {
		case <-o.notify:
		case <-deadline.C:
			t.Fatalf("%v never contained %q; got %q", s, sub, o.get(s))
		}
	}
}

// baseEnv is the environment the test processes get.
func baseEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH")}
}

// runAsync runs spec on a new goroutine and returns the channel its result
// arrives on, plus the channel the process ID arrives on.
func runAsync(ctx context.Context, spec Spec, out func(Stream, []byte)) (<-chan Result, <-chan int) {
	pidc := make(chan int, 1)
	spec.Started = func(pid int) { pidc <- pid }
	resc := make(chan Result, 1)
	go func() { resc <- Run(ctx, spec, out) }()
	return resc, pidc
}

func receive[T any](t *testing.T, c <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
		panic("unreachable")
	}
}

// liveGroupMembers lists the processes of process group pgid that are not
// zombies, using /proc. Zombies are dead; they only wait to be reaped by
// their (new) parent, which in a container whose PID 1 does not reap
// orphans may never happen.
func liveGroupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may contain anything.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid && f[0] != "Z" && f[0] != "X" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGroupGone waits until process group pgid has no live member.
func waitGroupGone(t *testing.T, pgid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Kill(-pgid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return
		}
		if err != nil {
			t.Fatalf("kill(-%d, 0): %v", pgid, err)
		}
		// The group still exists: only acceptable if every member is a
		// zombie (see liveGroupMembers).
		live := []int(nil)
		if runtime.GOOS == "linux" {
			if live = liveGroupMembers(t, pgid); len(live) == 0 {
				t.Logf("process group %d has only zombie members left", pgid)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process group %d still has live members %v", pgid, live)
		}
		<-tick.C
	}
}

func TestRunExitCodeAndStreams(t *testing.T) {
	out := newOutput()
	res := Run(t.Context(), Spec{
		Argv: []string{"sh", "-c", "echo hello; echo oops >&2; exit 3"},
		Env:  baseEnv(),
	}, out.write)
	want := Result{ExitCode: 3}
	if res != want {
		t.Errorf("Result = %+v, want %+v", res, want)
	}
	if got := out.get(StreamStdout); got != "hello\n" {
		t.Errorf("stdout = %q, want %q", got, "hello\n")
	}
	if got := out.get(StreamStderr); got != "oops\n" {
		t.Errorf("stderr = %q, want %q", got, "oops\n")
	}
}

func TestRunExitCodes(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want int
	}{
		{"true", 0},
		{"false", 1},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			res := Run(t.Context(), Spec{Argv: []string{tc.cmd}, Env: baseEnv()}, nil)
			if res.Err != nil || res.ExitCode != tc.want || res.Signal != "" || res.Cancelled || res.TimedOut {
				t.Errorf("Result = %+v, want exit code %d and nothing else", res, tc.want)
			}
		})
	}
}

func TestRunStartErrors(t *testing.T) {
	res := Run(t.Context(), Spec{Argv: []string{"hodei-no-such-command"}, Env: baseEnv()}, nil)
	if !errors.Is(res.Err, exec.ErrNotFound) {
		t.Errorf("not found: Err = %v, want exec.ErrNotFound", res.Err)
	}
	if res.ExitCode != -1 {
		t.Errorf("not found: ExitCode = %d, want -1", res.ExitCode)
	}

	if res := Run(t.Context(), Spec{}, nil); res.Err == nil {
		t.Errorf("empty Argv: Err = nil")
	}

	missingDir := filepath.Join(t.TempDir(), "missing")
	res = Run(t.Context(), Spec{Argv: []string{"true"}, Env: baseEnv(), Dir: missingDir}, nil)
	if !errors.Is(res.Err, os.ErrNotExist) {
		t.Errorf("missing Dir: Err = %v, want os.ErrNotExist", res.Err)
	}

	// Looked up in the PATH of Env, not of the test process.
	res = Run(t.Context(), Spec{Argv: []string{"true"}, Env: []string{"PATH=" + t.TempDir()}}, nil)
	if !errors.Is(res.Err, exec.ErrNotFound) {
		t.Errorf("PATH from Env: Err = %v, want exec.ErrNotFound", res.Err)
	}
}

func TestRunEnvAndDir(t *testing.T) {
	dir := t.TempDir()
	env := append(baseEnv(), "HODEI_TEST=a b=c")
	out := newOutput()
	res := Run(t.Context(), Spec{Argv: []string{"env"}, Env: env, Dir: dir}, out.write)
	if res.Err != nil || res.ExitCode != 0 {
		t.Fatalf("env: %+v", res)
	}
	if got, want := out.get(StreamStdout), strings.Join(env, "\n")+"\n"; got != want {
		t.Errorf("environment = %q, want exactly %q", got, want)
	}

	out = newOutput()
	res = Run(t.Context(), Spec{Argv: []string{"pwd"}, Env: baseEnv(), Dir: dir}, out.write)
	if res.Err != nil || res.ExitCode != 0 {
		t.Fatalf("pwd: %+v", res)
	}
	if got := strings.TrimSpace(out.get(StreamStdout)); got != dir {
		t.Errorf("working directory = %q, want %q", got, dir)
	}
}

// TestRunLaterEnvEntryWins: a job's env may set a key the agent sets too
// (PATH, HOME); the process gets one entry per key, the last one, as with
// os/exec (a process's getenv would find the first).
func TestRunLaterEnvEntryWins(t *testing.T) {
	env := append(baseEnv(), "HODEI_TEST=first", "HODEI_OTHER=x", "HODEI_TEST=second")
	out := newOutput()
	res := Run(t.Context(), Spec{Argv: []string{"env"}, Env: env}, out.write)
	if res.Err != nil || res.ExitCode != 0 {
		t.Fatalf("env: %+v", res)
	}
	want := strings.Join(append(baseEnv(), "HODEI_OTHER=x", "HODEI_TEST=second"), "\n") + "\n"
	if got := out.get(StreamStdout); got != want {
		t.Errorf("environment = %q, want %q", got, want)
	}

	// A long environment takes the other path.
	var long []string
	for i := range 40 {
		long = append(long, fmt.Sprintf("K%d=%d", i, i))
	}
	long = append(long, "K3=again")
	got := dedupEnv(long)
	if len(got) != 40 || got[len(got)-1] != "K3=again" || slices.Contains(got, "K3=3") {
		t.Errorf("dedupEnv of 41 entries with K3 twice = %q", got)
	}
	if short := []string{"A=1", "B=2"}; &dedupEnv(short)[0] != &short[0] {
		t.Errorf("dedupEnv copied an environment without duplicates")
	}
}

// TestRunSlowReaderBlocksTheWriter: the process's end of an output pipe
// is blocking, so a process writing faster than out consumes waits in
// write instead of failing with EAGAIN. out holds its first chunk until
// the kernel shows the writer asleep in a pipe write (Linux's
// /proc/PID/wchan), then takes the rest.
func TestRunSlowReaderBlocksTheWriter(t *testing.T) {
	if _, err := os.Stat("/proc/self/wchan"); err != nil {
		t.Skip("no /proc/PID/wchan here:", err)
	}
	const size = 1 << 20
	var (
		mu    sync.Mutex
		n     int
		pid   atomic.Int64 // Started may come after the first output
		first = true
	)
	res := Run(t.Context(), Spec{Argv: []string{"head", "-c", strconv.Itoa(size), "/dev/zero"}, Env: baseEnv(),
		Started: func(p int) { pid.Store(int64(p)) }}, func(s Stream, p []byte) {
		mu.Lock()
		defer mu.Unlock()
		n += len(p)
		if !first {
			return
		}
		first = false
		wchan := ""
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); runtime.Gosched() {
			if pid.Load() == 0 {
				continue
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid.Load()))
			if wchan = string(b); err != nil || strings.Contains(wchan, "pipe") {
				break
			}
		}
		if !strings.Contains(wchan, "pipe") {
			t.Errorf("the writer never waited in a pipe write (wchan %q)", wchan)
		}
	})
	if res.Err != nil || res.ExitCode != 0 {
		t.Fatalf("head: %+v", res)
	}
	if n != size {
		t.Errorf("read %d bytes, want %d", n, size)
	}
}

func TestRunStdinIsDevNull(t *testing.T) {
	out := newOutput()
	res := Run(t.Context(), Spec{Argv: []string{"wc", "-c"}, Env: baseEnv()}, out.write)
	if res.Err != nil || res.ExitCode != 0 {
		t.Fatalf("wc: %+v", res)
	}
	if got := strings.TrimSpace(out.get(StreamStdout)); got != "0" {
		t.Errorf("bytes on stdin = %q, want 0", got)
	}
}

func TestRunCancelKillsProcessGroup(t *testing.T) {
	const grace = 5 * time.Second
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := newOutput()
	resc, pidc := runAsync(ctx, Spec{
		Argv:  []string{"sh", "-c", "sleep 600 & echo started; sleep 600; wait"},
		Env:   baseEnv(),
		Grace: grace,
	}, out.write)
	pgid := receive(t, pidc, 10*time.Second, "start")
	out.waitContains(t, StreamStdout, "started\n", 10*time.Second)

	cancel()
	start := time.Now()
	res := receive(t, resc, grace+2*time.Second, "Run to return after cancel")
	t.Logf("Run returned %v after cancel: %+v", time.Since(start), res)

	if !res.Cancelled || res.TimedOut || res.Err != nil {
		t.Errorf("Result = %+v, want Cancelled only", res)
	}
	if res.ExitCode != -1 || res.Signal != "SIGTERM" {
		t.Errorf("ExitCode, Signal = %d, %q, want -1, SIGTERM", res.ExitCode, res.Signal)
	}
	waitGroupGone(t, pgid, 5*time.Second)
}

func TestRunGraceThenSIGKILL(t *testing.T) {
	const grace = 500 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := newOutput()
	resc, pidc := runAsync(ctx, Spec{
		Argv:  []string{"sh", "-c", `trap "" TERM; echo started; sleep 600`},
		Env:   baseEnv(),
		Grace: grace,
	}, out.write)
	pgid := receive(t, pidc, 10*time.Second, "start")
	out.waitContains(t, StreamStdout, "started\n", 10*time.Second)

	cancel()
	start := time.Now()
	res := receive(t, resc, grace+5*time.Second, "Run to return after cancel")
	elapsed := time.Since(start)
	t.Logf("Run returned %v after cancel: %+v", elapsed, res)

	if elapsed < grace {
		t.Errorf("process killed after %v, before the grace period of %v", elapsed, grace)
	}
	if !res.Cancelled || res.TimedOut || res.Err != nil {
		t.Errorf("Result = %+v, want Cancelled only", res)
	}
	if res.ExitCode != -1 || res.Signal != "SIGKILL" {
		t.Errorf("ExitCode, Signal = %d, %q, want -1, SIGKILL", res.ExitCode, res.Signal)
	}
	waitGroupGone(t, pgid, 5*time.Second)
}

func TestRunTimeout(t *testing.T) {
	res := Run(t.Context(), Spec{
		Argv:    []string{"sleep", "10"},
		Env:     baseEnv(),
		Timeout: 300 * time.Millisecond,
	}, nil)
	if !res.TimedOut || res.Cancelled || res.Err != nil {
		t.Errorf("Result = %+v, want TimedOut only", res)
	}
	if res.Signal != "SIGTERM" {
		t.Errorf("Signal = %q, want SIGTERM", res.Signal)
	}
}

func TestRunAlreadyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	started := false
	res := Run(ctx, Spec{Argv: []string{"true"}, Env: baseEnv(), Started: func(int) { started = true }}, nil)
	if started || !res.Cancelled || !errors.Is(res.Err, context.Canceled) {
		t.Errorf("started = %v, Result = %+v; want not started, Cancelled, Err context.Canceled", started, res)
	}
}

func TestRunKillsBackgroundProcessesOnExit(t *testing.T) {
	// The job exits while a background process it started still runs and
	// holds stdout: Run must kill it instead of waiting for it.
	out := newOutput()
	resc, pidc := runAsync(t.Context(), Spec{
		Argv: []string{"sh", "-c", "sleep 600 & echo bye"},
		Env:  baseEnv(),
	}, out.write)
	pgid := receive(t, pidc, 10*time.Second, "start")
	res := receive(t, resc, 10*time.Second, "Run to return")
	if res != (Result{}) {
		t.Errorf("Result = %+v, want exit code 0", res)
	}
	if got := out.get(StreamStdout); got != "bye\n" {
		t.Errorf("stdout = %q, want %q", got, "bye\n")
	}
	waitGroupGone(t, pgid, 5*time.Second)
}

func TestRunEscapedProcessDoesNotHang(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid not available")
	}
	// A process that leaves the group keeps stdout open; Run gives up on
	// the pipe once it is idle instead of waiting for it to close.
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := `setsid sh -c 'echo $$ > "$1"; exec sleep 600' sh "$1" &
while [ ! -s "$1" ]; do sleep 0.01; done
cat "$1"`
	out := newOutput()
	resc, _ := runAsync(t.Context(), Spec{
		Argv: []string{"sh", "-c", script, "sh", pidFile},
		Env:  baseEnv(),
	}, out.write)
	res := receive(t, resc, drainIdleTimeout+10*time.Second, "Run to return")
	escaped, err := strconv.Atoi(strings.TrimSpace(out.get(StreamStdout)))
	if err != nil {
		t.Fatalf("stdout = %q, want the pid of the escaped process", out.get(StreamStdout))
	}
	t.Cleanup(func() { _ = syscall.Kill(escaped, syscall.SIGKILL) })
	if res != (Result{}) {
		t.Errorf("Result = %+v, want exit code 0", res)
	}
	if err := syscall.Kill(escaped, 0); err != nil {
		t.Errorf("escaped process %d: %v; the test did not exercise a held pipe", escaped, err)
	}
}

func TestRunBinaryOutput(t *testing.T) {
	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	copy(data, "\xff\xfe\x00invalid \xc3\x28 utf-8\n")
	file := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}

	var (
		mu     sync.Mutex
		got    []byte
		chunks int
	)
	res := Run(t.Context(), Spec{Argv: []string{"cat", file}, Env: baseEnv()}, func(s Stream, p []byte) {
		if s != StreamStdout {
			t.Errorf("output on %v: %q", s, p)
			return
		}
		if len(p) > readBufferSize {
			t.Errorf("chunk of %d bytes, want at most %d", len(p), readBufferSize)
		}
		mu.Lock()
		got = append(got, p...)
		chunks++
		mu.Unlock()
	})
	if res != (Result{}) {
		t.Errorf("Result = %+v, want exit code 0", res)
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got, data) {
		t.Errorf("got %d bytes, want the %d bytes of the file", len(got), len(data))
	}
	t.Logf("%d chunks", chunks)
}

func TestRunToBatcher(t *testing.T) {
	var (
		mu    sync.Mutex
		lines []Line
	)
	b := NewBatcher(BatcherConfig{}, func(_ context.Context, batch Batch) error {
		mu.Lock()
		lines = append(lines, batch.Lines...)
		mu.Unlock()
		return nil
	})
	errc := make(chan error, 1)
	go func() { errc <- b.Run(t.Context()) }()

	res := Run(t.Context(), Spec{
		Argv: []string{"sh", "-c", `printf 'one\ntwo\n'; printf 'no newline' >&2`},
		Env:  baseEnv(),
	}, b.Write)
	b.Close()
	if err := receive(t, errc, 10*time.Second, "Batcher.Run"); err != nil {
		t.Fatalf("Batcher.Run: %v", err)
	}
	if res != (Result{}) {
		t.Errorf("Result = %+v, want exit code 0", res)
	}

	mu.Lock()
	defer mu.Unlock()
	var stdout, stderr []string
	for _, l := range lines {
		s := string(l.Data)
		if l.Partial {
			s += " (partial)"
		}
		if l.Stream == StreamStdout {
			stdout = append(stdout, s)
		} else {
			stderr = append(stderr, s)
		}
	}
	if got, want := strings.Join(stdout, "|"), "one|two"; got != want {
		t.Errorf("stdout lines = %q, want %q", got, want)
	}
	if got, want := strings.Join(stderr, "|"), "no newline (partial)"; got != want {
		t.Errorf("stderr lines = %q, want %q", got, want)
	}
}

// TestRunReusesItsReadBuffers: a short process costs far less garbage than
// the two 32 KiB buffers its output streams are read with. With a new
// buffer per stream every run allocated more than 64 KiB, and an agent
// running short jobs spent much of its CPU collecting them.
func TestRunReusesItsReadBuffers(t *testing.T) {
	spec := Spec{Argv: []string{"true"}, Env: []string{"PATH=" + os.Getenv("PATH")}}
	if res := Run(context.Background(), spec, nil); res.ExitCode != 0 || res.Err != nil {
		t.Fatalf("warm-up run: %+v", res)
	}
	const runs = 50
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		if res := Run(context.Background(), spec, nil); res.ExitCode != 0 || res.Err != nil {
			t.Fatalf("run %d: %+v", i, res)
		}
	}
	runtime.ReadMemStats(&after)
	perRun := (after.TotalAlloc - before.TotalAlloc) / runs
	t.Logf("%d bytes allocated per run", perRun)
	// Below both buffers' size with room to spare: under the race
	// detector sync.Pool drops some of what it is given back.
	if perRun >= 3*readBufferSize/2 {
		t.Fatalf("a run of true allocated %d bytes, more than its two read buffers would take (%d bytes each): they are not reused", perRun, readBufferSize)
	}
}

// TestRunMergeOutputKeepsWriteOrder: with one pipe for both streams, lines
// the process writes alternately to stdout and stderr arrive in exactly the
// order written, all as stdout.
func TestRunMergeOutputKeepsWriteOrder(t *testing.T) {
	const n = 2000
	script := `i=0; while [ $i -lt ` + strconv.Itoa(n) + ` ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done`
	out := newOutput()
	res := Run(t.Context(), Spec{Argv: []string{"sh", "-c", script}, Env: baseEnv(), MergeOutput: true}, out.write)
	if res != (Result{}) {
		t.Fatalf("Result = %+v, want success", res)
	}
	var want strings.Builder
	for i := range n {
		fmt.Fprintf(&want, "out %d\nerr %d\n", i, i)
	}
	if got := out.get(StreamStdout); got != want.String() {
		t.Errorf("merged output is not in write order: %d bytes, want %d; first lines %q", len(got), want.Len(), firstLines(got, 6))
	}
	if got := out.get(StreamStderr); got != "" {
		t.Errorf("stderr = %q, want nothing (merged into stdout)", got)
	}
}

func firstLines(s string, n int) []string {
	lines := strings.SplitN(s, "\n", n+1)
	return lines[:min(n, len(lines))]
}
