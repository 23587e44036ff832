package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// These tests check that a job never runs twice at once: when its agent
// dies or is cut off from the server, the attempt's processes are gone
// before the retry starts.

// overlapJob is a job whose first attempt writes its shell's and its
// sleep's pids to dir/pids (the shell's pid is the group's) and sleeps;
// the retry prints "alive PID" for each of them still running, then
// "checked".
func overlapJob(dir string) *hodeiv1.JobSpec {
	marker, pids := filepath.Join(dir, "marker"), filepath.Join(dir, "pids")
	script := fmt.Sprintf(`if [ -e %[1]s ]; then
  for p in $(cat %[2]s); do
    s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null)
    if [ -n "$s" ] && [ "$s" != Z ]; then echo alive $p; fi
  done
  echo checked; exit 0
fi
touch %[1]s
sleep 30 &
echo $$ $! > %[2]s.tmp; mv %[2]s.tmp %[2]s
wait`, marker, pids)
	return &hodeiv1.JobSpec{Command: []string{"sh", "-c", script},
		Retry: &hodeiv1.RetryPolicy{MaxAttempts: 2, InitialBackoff: durationpb.New(10 * time.Millisecond)}}
}

// overlapPids waits for the first attempt's pids: the group (its shell)
// and the sleep under it.
func overlapPids(t *testing.T, dir string) (pgid, sleepPID int) {
	t.Helper()
	var b []byte
	eventually(t, 30*time.Second, "first attempt's pids", func() bool {
		b, _ = os.ReadFile(filepath.Join(dir, "pids"))
		return len(strings.Fields(string(b))) == 2
	})
	f := strings.Fields(string(b))
	pgid, _ = strconv.Atoi(f[0])
	sleepPID, _ = strconv.Atoi(f[1])
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	return pgid, sleepPID
}

// checkRetry waits for the job to succeed on its second attempt and
// checks that the retry found none of the first attempt's processes.
func checkRetry(t *testing.T, st *store.Store, addr, id string) *hodeiv1.Job {
	t.Helper()
	c := jobClient(addr)
	j := pollJob(t, c, id, 30*time.Second, "final", isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 2 {
		t.Fatalf("job: state=%v attempts=%v, want SUCCEEDED on attempt 2", j.State, j.Attempts)
	}
	if a1 := j.Attempts[0]; a1.FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST {
		t.Errorf("attempt 1: class %v (%s), want worker_lost", a1.FailureClass, a1.Message)
	}
	if out, _ := jobLogs(t, c, id); string(out) != "checked\n" {
		t.Errorf("retry's stdout %q, want %q: the first attempt's processes ran next to the retry", out, "checked\n")
	}
	t.Logf("job events: %v", eventTypes(t, st, id))
	return j
}

// TestAgentKill9KillsItsJobs: the agent running a job (a shell and a
// sleep under it) is killed with SIGKILL. Within a few seconds no process
// of the job's group is alive (the agent's guardian killed them), and the
// retry, on another agent, finds none of them.
func TestAgentKill9KillsItsJobs(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", "6s")
	st := openStore(t, dbURL)
	a := spawnAgent(t, st, []string{p.addr})
	c := jobClient(p.addr)

	dir := t.TempDir()
	id := submit(t, c, overlapJob(dir))
	pgid, sleepPID := overlapPids(t, dir)
	pollJob(t, c, id, 10*time.Second, "running", isRunning)

	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	eventually(t, 3*time.Second, "the job's processes gone after kill -9 of its agent", func() bool {
		return len(groupMembers(pgid)) == 0 && processGone(sleepPID)
	})
	t.Logf("job's group %d gone %s after kill -9 of the agent", pgid, time.Since(killed).Round(time.Millisecond))

	spawnAgent(t, st, []string{p.addr})
	checkRetry(t, st, p.addr, id)
}

// TestAgentKill9KillsItsJobsAfterItsBinaryIsGone: the agent's binary is
// removed as the agent starts (an upgrade or a rebuild replacing the file
// under a running agent), before it starts its guardian. The guardian
// still starts, from the running binary itself, and kills the job's
// processes when the agent is killed with SIGKILL.
func TestAgentKill9KillsItsJobsAfterItsBinaryIsGone(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", "6s")
	st := openStore(t, dbURL)
	bin := filepath.Join(t.TempDir(), "hodei")
	copyFile(t, hodeiBin, bin, 0o755)
	// Stopped the moment it runs (its runtime is still starting, long
	// before the guardian), the file removed, then resumed.
	a := spawnAgentFrom(t, st, bin, func(pid int) {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(bin); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}, []string{p.addr})
	c := jobClient(p.addr)

	dir := t.TempDir()
	id := submit(t, c, overlapJob(dir))
	pgid, sleepPID := overlapPids(t, dir)
	pollJob(t, c, id, 10*time.Second, "running", isRunning)

	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the job's processes gone after kill -9 of its agent", func() bool {
		return len(groupMembers(pgid)) == 0 && processGone(sleepPID)
	})
	spawnAgent(t, st, []string{p.addr})
	checkRetry(t, st, p.addr, id)
}

// TestAgentCutOffKillsItsJobsBeforeTheLease: the agent reaches the server
// through a proxy that then stops forwarding without closing anything (a
// blackholed connection). Before the server expires the worker (lease
// 6 s), the agent kills its job's processes on its own; the retry, on
// another agent, starts after that and finds none of them.
func TestAgentCutOffKillsItsJobsBeforeTheLease(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", "6s")
	st := openStore(t, dbURL)
	px := startProxy(t, p.addr)
	a := spawnAgent(t, st, []string{px.addr()})
	c := jobClient(p.addr)

	dir := t.TempDir()
	id := submit(t, c, overlapJob(dir))
	pgid, sleepPID := overlapPids(t, dir)
	pollJob(t, c, id, 10*time.Second, "running", isRunning)
	spawnAgent(t, st, []string{p.addr}) // for the retry

	px.blackhole(true)
	cut := time.Now()
	var killed time.Time
	eventually(t, 20*time.Second, "the job's processes killed by the cut-off agent", func() bool {
		killed = time.Now()
		return len(groupMembers(pgid)) == 0 && processGone(sleepPID)
	})
	t.Logf("job's group gone %s after the cut", killed.Sub(cut).Round(time.Millisecond))
	if killed.Sub(cut) < time.Second {
		t.Errorf("job killed %s after the cut, too early for a lost contact", killed.Sub(cut))
	}

	j := checkRetry(t, st, p.addr, id)
	expired := queryOne[time.Time](t, st, "SELECT created_at FROM events WHERE type = 'WorkerDisconnected' AND aggregate_id = $1 ORDER BY id LIMIT 1", a.id)
	failed := queryOne[time.Time](t, st, "SELECT created_at FROM events WHERE type = 'JobFailed' AND aggregate_id = $1 ORDER BY id LIMIT 1", id)
	t.Logf("after the cut: killed %s, worker expired %s, attempt 1 failed %s, retry started %s",
		killed.Sub(cut).Round(time.Millisecond), expired.Sub(cut).Round(time.Millisecond), failed.Sub(cut).Round(time.Millisecond),
		j.Attempts[1].StartedAt.AsTime().Sub(cut).Round(time.Millisecond))
	if !killed.Before(expired) || !killed.Before(failed) {
		t.Errorf("the job's processes were gone %s after the cut, not before the server expired the worker (%s) and failed the attempt (%s)",
			killed.Sub(cut), expired.Sub(cut), failed.Sub(cut))
	}
	if s := j.Attempts[1].StartedAt.AsTime(); !s.After(killed) {
		t.Errorf("the retry started %s after the cut, before the first attempt was killed (%s)", s.Sub(cut), killed.Sub(cut))
	}

	// Back in contact, the agent reports the attempt it killed; the
	// server has already failed it, so the report is stale.
	stale := staleReports(t, p.addr)
	px.blackhole(false)
	eventually(t, 20*time.Second, "the killed attempt reported as stale", func() bool { return staleReports(t, p.addr) > stale })
	if log := a.logs.String(); !strings.Contains(log, "killed the running jobs") {
		t.Errorf("the agent's log does not say it killed its jobs:\n%s", log)
	}
}

// proxy forwards TCP connections to a server until it is told to
// blackhole them: then it forwards nothing, and closes nothing, until told
// otherwise.
type proxy struct {
	ln   net.Listener
	mu   sync.Mutex
	cond *sync.Cond
	hole bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &proxy{ln: ln}
	px.cond = sync.NewCond(&px.mu)
	ctx, cancel := context.WithCancel(context.Background())
	var conns sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		px.blackhole(false)
		conns.Wait()
	})
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			stop := context.AfterFunc(ctx, func() { in.Close(); out.Close() })
			var both sync.WaitGroup
			both.Add(2)
			conns.Add(1)
			go func() { defer both.Done(); px.copy(out, in) }()
			go func() { defer both.Done(); px.copy(in, out) }()
			go func() { both.Wait(); stop(); in.Close(); out.Close(); conns.Done() }()
		}
	}()
	return px
}

func (px *proxy) addr() string { return px.ln.Addr().String() }

// blackhole stops (on) or resumes (off) forwarding on every connection.
func (px *proxy) blackhole(on bool) {
	px.mu.Lock()
	px.hole = on
	px.mu.Unlock()
	px.cond.Broadcast()
}

// copy forwards src to dst, holding what it read while blackholed.
func (px *proxy) copy(dst, src net.Conn) {
	defer dst.(*net.TCPConn).CloseWrite()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		px.mu.Lock()
		for px.hole {
			px.cond.Wait()
		}
		px.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				src.Close()
			}
			return
		}
	}
}

// TestAgentCutOffReportsTheJobsItKilled: an agent cut off long enough to
// kill its job, and back before the server's lease runs out, reports the
// attempt itself: worker_lost, "agent lost contact with the server for
// Ns"; the retry runs on another agent and finds none of its processes.
func TestAgentCutOffReportsTheJobsItKilled(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", "10s")
	st := openStore(t, dbURL)
	px := startProxy(t, p.addr)
	a := spawnAgent(t, st, []string{px.addr()})
	c := jobClient(p.addr)

	dir := t.TempDir()
	id := submit(t, c, overlapJob(dir))
	pgid, sleepPID := overlapPids(t, dir)
	pollJob(t, c, id, 10*time.Second, "running", isRunning)

	px.blackhole(true)
	cut := time.Now()
	eventually(t, 20*time.Second, "the job's processes killed by the cut-off agent", func() bool {
		return len(groupMembers(pgid)) == 0 && processGone(sleepPID)
	})
	px.blackhole(false)
	t.Logf("job's group gone %s after the cut; forwarding again", time.Since(cut).Round(time.Millisecond))
	spawnAgent(t, st, []string{p.addr}) // for the retry

	j := checkRetry(t, st, p.addr, id)
	t.Logf("attempt 1: %v %q", j.Attempts[0].FailureClass, j.Attempts[0].Message)
	if a1 := j.Attempts[0]; a1.WorkerId != a.id || !strings.HasPrefix(a1.Message, "agent lost contact with the server for ") {
		t.Errorf("attempt 1 on worker %s: %q, want the cut-off agent's own report (worker %s, agent lost contact ...)", a1.WorkerId, a1.Message, a.id)
	}
	if evs := eventTypes(t, st, a.id); slices.Contains(evs, "WorkerDisconnected") {
		t.Errorf("worker events %v: the server expired the worker that came back within the lease", evs)
	}
}

// TestAgentPassesOverAServerThatNeverAnswers: a server address that
// accepts connections but never answers (blackholed) holds neither the
// enrollment nor the stream: the agent tries the next server in its list
// after --connect-timeout.
func TestAgentPassesOverAServerThatNeverAnswers(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0")
	st := openStore(t, dbURL)
	px := startProxy(t, p.addr)
	px.blackhole(true)
	a := spawnAgent(t, st, []string{px.addr(), p.addr}, "--connect-timeout", "1s")
	c := jobClient(p.addr)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
	j := pollJob(t, c, id, 20*time.Second, "final", isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || j.Attempts[0].WorkerId != a.id {
		t.Fatalf("job %v on worker %s (%s), want succeeded on %s", j.State, j.Attempts[0].WorkerId, j.Message, a.id)
	}
}

// TestAgentLeavesAStreamThatWentSilent: a connection that stops carrying
// anything (blackholed, never closed) is left once the server has been
// silent for the fencing threshold; the agent reconnects to the next
// server in its list and takes new work.
func TestAgentLeavesAStreamThatWentSilent(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", "6s")
	st := openStore(t, dbURL)
	px := startProxy(t, p.addr)
	a := spawnAgent(t, st, []string{px.addr(), p.addr}, "--connect-timeout", "1s")
	c := jobClient(p.addr)
	first := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
	pollJob(t, c, first, 20*time.Second, "final", isFinal)

	px.blackhole(true)
	cut := time.Now()
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
	j := pollJob(t, c, id, 30*time.Second, "final", isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || j.Attempts[0].WorkerId != a.id {
		t.Fatalf("job after the cut: %v on worker %s (%s), want succeeded on the cut-off agent %s", j.State, j.Attempts[0].WorkerId, j.Message, a.id)
	}
	t.Logf("the cut-off agent ran a new job %s after the cut", time.Since(cut).Round(time.Millisecond))
}

// copyFile copies the file src to dst with mode perm.
func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, perm); err != nil {
		t.Fatal(err)
	}
}
