//go:build chaos

package main

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// devProc is a `hodei dev` subprocess.
type devProc struct {
	*platformProc
	url string // its embedded PostgreSQL's database
}

// devDataDir is a path for a data directory that PostgreSQL's OS user can
// reach (t.TempDir's are private to root), removed after the test.
func devDataDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hodei-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "data")
}

var devURL = regexp.MustCompile(`embedded postgres ready" url="?([^"\s]+)`)

// startDev runs `hodei dev --listen addr args...` until the test ends and
// waits until it serves.
func startDev(t *testing.T, addr string, args ...string) *devProc {
	t.Helper()
	d := &devProc{platformProc: spawnPlatform(t, nil, append([]string{"dev", "--listen", addr}, args...)...)}
	eventually(t, 60*time.Second, "hodei dev serving on "+addr, func() bool {
		select {
		case <-d.done:
			t.Fatalf("hodei dev exited:\n%s", d.logs.String())
		default:
		}
		m := devURL.FindStringSubmatch(d.logs.String())
		if m == nil {
			return false
		}
		d.url = m[1]
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return d
}

// TestChaosServerKill9UnderLoad: `hodei dev --data-dir` runs 1,000 jobs
// of mixed length with its own process workers; it is killed with SIGKILL
// a third of the way through and started again on the same data
// directory. Every job completes, none twice at once.
func TestChaosServerKill9UnderLoad(t *testing.T) {
	const jobs = 1000
	dir, addr := devDataDir(t), freeAddr(t)
	args := []string{"--data-dir", dir, "--max-workers", "8", "--lease", "3s"}
	d := startDev(t, addr, args...)
	l := newLedger(t, "server_kill9")
	c := jobClient(addr)
	go l.load(t, []hodeiv1connect.JobServiceClient{c}, jobs, 5)
	st := openStore(t, d.url)
	eventually(t, 60*time.Second, "a third of the jobs done", func() bool {
		return queryOne[int64](t, st, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") >= jobs/3
	})
	st.Close()
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	killed := time.Now()
	d = startDev(t, addr, args...)
	started := l.probe(t, c, jobs, 30*time.Second)
	eventually(t, 60*time.Second, "every job submitted", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.ids) == jobs+1
	})
	l.check(t, openStore(t, d.url), 120*time.Second, 2*time.Second, started.Sub(killed))
}

// TestChaosAgentKill9MidJob: of two agents, the one running a batch of
// long jobs is killed with SIGKILL. Its jobs are retried on the other
// one by the default retry policy once the lease expires, and their first
// processes are gone before: they die with their agent.
func TestChaosAgentKill9MidJob(t *testing.T) {
	const lease = 3 * time.Second
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", lease.String())
	st := openStore(t, dbURL)
	victim := spawnAgent(t, st, []string{p.addr}, "--slots", "4", "--grace", "1s")
	c := jobClient(p.addr)
	l := newLedger(t, "agent_kill9")
	for i := range 4 {
		l.submit(t, c, i, l.spec(8*time.Second, 0))
	}
	for _, id := range l.ids {
		l.waitStarted(t, id, 30*time.Second)
	}
	spawnAgent(t, st, []string{p.addr}, "--slots", "4", "--grace", "1s")
	if err := syscall.Kill(victim.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	started := l.waitRetried(t, 30*time.Second)
	l.check(t, st, 60*time.Second, 9*time.Second, started.Sub(killed))
}

// waitRetried waits until every job of the ledger has a second attempt
// started and returns when the last one started.
func (l *ledger) waitRetried(t *testing.T, timeout time.Duration) time.Time {
	t.Helper()
	var last int64
	eventually(t, timeout, "every job retried", func() bool {
		runs, _, _ := l.read(t)
		for _, id := range l.ids {
			if len(runs[id]) < 2 {
				return false
			}
			last = max(last, runs[id][1].start)
		}
		return true
	})
	return time.Unix(0, last)
}

// TestChaosAgentSIGSTOPPastLease: the agent running a long job is stopped
// (SIGSTOP) past the lease, then resumed. The job is retried on the other
// agent; the stopped attempt's process is gone before the retry starts,
// and the resumed agent's late result changes nothing.
func TestChaosAgentSIGSTOPPastLease(t *testing.T) {
	const lease = 6 * time.Second // well above the 2 s heartbeat (see TestAgentSIGSTOPPastLeaseIsRetriedAndLateResultRejected)
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", lease.String())
	st := openStore(t, dbURL)
	c := jobClient(p.addr)
	l := newLedger(t, "agent_sigstop")
	victim := spawnAgent(t, st, []string{p.addr}, "--grace", "1s")
	id := l.submit(t, c, 0, l.spec(20*time.Second, 3))
	l.waitStarted(t, id, 30*time.Second)
	spawnAgent(t, st, []string{p.addr}, "--grace", "1s")
	if err := syscall.Kill(victim.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Cleanup(func() { syscall.Kill(victim.pid(), syscall.SIGCONT) })
	retried := l.waitRetried(t, 3*lease)
	if err := syscall.Kill(victim.pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	j := pollJob(t, c, id, 40*time.Second, "final", isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 2 || j.Attempts[0].FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST {
		t.Errorf("job: state=%v attempts=%v, want SUCCEEDED on attempt 2 after attempt 1 worker_lost", j.State, j.Attempts)
	}
	l.check(t, st, 40*time.Second, 3*time.Second, retried.Sub(stopped))
	if j := getJob(c, id); j.Attempt != 2 || len(j.Attempts) != 2 {
		t.Errorf("after the late result: attempt %d of %d, want the job unchanged", j.Attempt, len(j.Attempts))
	}
}

// TestChaosReplicaKill9UnderLoad: three `hodei server` replicas on one
// database, agents spread across them, 1,000 jobs of mixed length, and one
// replica killed with SIGKILL under load. Every job completes exactly once.
func TestChaosReplicaKill9UnderLoad(t *testing.T) {
	const jobs = 1000
	dbURL := storetest.URL(t)
	var servers []serverProc
	var addrs []string
	for range 3 {
		p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", "3s")
		servers, addrs = append(servers, p), append(addrs, p.addr)
	}
	st := openStore(t, dbURL)
	var first []*agentProc // the agents that prefer the replica killed
	for i := range 6 {     // each agent prefers another replica
		a := spawnAgent(t, st, append(append([]string{}, addrs[i%3:]...), addrs[:i%3]...), "--slots", "8", "--grace", "1s")
		if i%3 == 0 {
			first = append(first, a)
		}
	}
	l := newLedger(t, "replica_kill9")
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		l.load(t, []hodeiv1connect.JobServiceClient{jobClient(addrs[1]), jobClient(addrs[2])}, jobs, 5)
	}()
	eventually(t, 60*time.Second, "a third of the jobs done", func() bool {
		return queryOne[int64](t, st, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") >= jobs/3
	})
	replica := queryOne[string](t, st, "SELECT replica_id FROM workers WHERE id = $1", first[0].id)
	if err := servers[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Recovery: until the agents of the killed replica are connected to
	// another one.
	eventually(t, 30*time.Second, "the killed replica's agents connected elsewhere", func() bool {
		for _, a := range first {
			if queryOne[string](t, st, "SELECT replica_id FROM workers WHERE id = $1", a.id) == replica || workerState(t, st, a.id) != "connected" {
				return false
			}
		}
		return true
	})
	recovered := time.Now()
	<-loaded
	l.check(t, st, 120*time.Second, 2*time.Second, recovered.Sub(killed))
}
