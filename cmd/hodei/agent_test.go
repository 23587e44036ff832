package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// These tests run `hodei server` and `hodei agent` as real processes over
// gRPC on loopback, on a fresh PostgreSQL database each, and check the
// agent's lifecycle guarantees (drain, grace, kill, lease, fencing) and
// log exactness from the outside: process exit codes, rows, events and
// the log API.

// TestAgentSIGTERMDrainsAndExitsZero: SIGTERM while a job runs → the
// agent announces the shutdown, takes no new job, lets the running job
// finish (its result and log are stored), says goodbye and exits 0; the
// worker ends terminated with a WorkerGracefulShutdown event.
func TestAgentSIGTERMDrainsAndExitsZero(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0")
	st := openStore(t, dbURL)
	a := spawnAgent(t, st, []string{p.addr}, "--drain-timeout", "20s", "--grace", "1s")
	c := jobClient(p.addr)

	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", "sleep 1; echo done"}})
	pollJob(t, c, id, 15*time.Second, "running", isRunning)
	term := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Once the shutdown is announced, the worker takes no new job.
	eventually(t, 5*time.Second, "WorkerGracefulShutdown event", func() bool {
		return slices.Contains(eventTypes(t, st, a.id), "WorkerGracefulShutdown")
	})
	late := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})

	if code := a.exit(t, 15*time.Second); code != 0 {
		t.Fatalf("agent exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("agent exited %s after SIGTERM", time.Since(term).Round(time.Millisecond))
	j := getJob(c, id)
	if j.GetState() != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.GetAttempts()) != 1 {
		t.Fatalf("job: state=%v attempts=%d, want SUCCEEDED after 1 attempt (the drain lets it finish)", j.GetState(), len(j.GetAttempts()))
	}
	if out, _ := jobLogs(t, c, id); string(out) != "done\n" {
		t.Errorf("job stdout %q, want %q", out, "done\n")
	}
	eventually(t, 5*time.Second, "worker terminated", func() bool { return workerState(t, st, a.id) == "terminated" })
	evs := eventTypes(t, st, a.id)
	if slices.Contains(evs, "WorkerShutdownForced") {
		t.Errorf("worker events %v: a forced shutdown after a drain that finished in time", evs)
	}
	if lj := getJob(c, late); lj.GetState() != hodeiv1.JobState_JOB_STATE_QUEUED || len(lj.GetAttempts()) != 0 {
		t.Errorf("job submitted during the drain: state=%v attempts=%d, want QUEUED and never assigned", lj.GetState(), len(lj.GetAttempts()))
	}
	t.Logf("worker events: %v", evs)
}

// TestAgentSIGTERMKillsJobIgnoringTERMAfterGrace: with the drain deadline
// past, a job that ignores SIGTERM gets SIGKILL after the grace period;
// that is within the hard deadline, so the shutdown is graceful: exit 0,
// no WorkerShutdownForced, and no process of the job left. The attempt
// was lost to the worker's shutdown (worker_lost), not cancelled by a user.
func TestAgentSIGTERMKillsJobIgnoringTERMAfterGrace(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0")
	st := openStore(t, dbURL)
	a := spawnAgent(t, st, []string{p.addr}, "--drain-timeout", "1s", "--grace", "1s")
	c := jobClient(p.addr)

	pidFile := filepath.Join(t.TempDir(), "pid")
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", `trap "" TERM; echo $$ > ` + pidFile + `; while :; do sleep 1; done`}})
	pgid, _ := strconv.Atoi(waitFile(t, pidFile))
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	pollJob(t, c, id, 15*time.Second, "running", isRunning)
	term := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := a.exit(t, 15*time.Second); code != 0 {
		t.Fatalf("agent exit code %d, want 0 (the job was killed after the grace, before the hard deadline)", code)
	}
	took := time.Since(term)
	t.Logf("agent exited %s after SIGTERM (drain 1s + grace 1s)", took.Round(time.Millisecond))
	if took < 2*time.Second {
		t.Errorf("agent exited after %s, before drain + grace", took)
	}
	if m := groupMembers(pgid); len(m) > 0 {
		t.Errorf("processes %v of the job's group %d still alive after the agent exited", m, pgid)
	}
	j := pollJob(t, c, id, 5*time.Second, "attempt ended", firstAttemptEnded)
	if len(j.Attempts) != 1 || j.Attempts[0].FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST || j.Attempts[0].Signal != "SIGKILL" ||
		j.State != hodeiv1.JobState_JOB_STATE_RETRYING {
		t.Errorf("job: state=%v attempts=%v, want one attempt failed as worker_lost by SIGKILL, the job retrying", j.State, j.Attempts)
	}
	eventually(t, 5*time.Second, "worker terminated", func() bool { return workerState(t, st, a.id) == "terminated" })
	evs := eventTypes(t, st, a.id)
	if !slices.Contains(evs, "WorkerGracefulShutdown") || slices.Contains(evs, "WorkerShutdownForced") {
		t.Errorf("worker events %v, want WorkerGracefulShutdown and no WorkerShutdownForced", evs)
	}
}

// firstAttemptEnded: the job's first attempt has finished (a lost worker's
// job is then retrying: there is no other worker to run it).
func firstAttemptEnded(j *hodeiv1.Job) bool {
	return len(j.Attempts) > 0 && j.Attempts[0].FinishedAt != nil
}

// TestAgentSIGTERMForcedExitsOne: a job that ignores SIGTERM and a grace
// longer than the hard deadline: at the hard deadline the agent kills the
// job's process group, announces WorkerShutdownForced and exits 1.
func TestAgentSIGTERMForcedExitsOne(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0")
	st := openStore(t, dbURL)
	a := spawnAgent(t, st, []string{p.addr}, "--drain-timeout", "1s", "--grace", "20s", "--hard-timeout", "2s")
	c := jobClient(p.addr)

	pidFile := filepath.Join(t.TempDir(), "pid")
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", `trap "" TERM; echo $$ > ` + pidFile + `; while :; do sleep 1; done`}})
	pgid, _ := strconv.Atoi(waitFile(t, pidFile))
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	pollJob(t, c, id, 15*time.Second, "running", isRunning)
	term := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := a.exit(t, 15*time.Second); code != 1 {
		t.Fatalf("agent exit code %d, want 1 (forced shutdown)", code)
	}
	took := time.Since(term)
	t.Logf("agent exited %s after SIGTERM (hard deadline 2s)", took.Round(time.Millisecond))
	if took < 2*time.Second || took > 10*time.Second {
		t.Errorf("agent exited after %s; want after the hard deadline (2s) and well before the grace (20s)", took)
	}
	if m := groupMembers(pgid); len(m) > 0 {
		t.Errorf("processes %v of the job's group %d still alive after a forced shutdown", m, pgid)
	}
	eventually(t, 5*time.Second, "WorkerShutdownForced event", func() bool {
		return slices.Contains(eventTypes(t, st, a.id), "WorkerShutdownForced")
	})
	j := pollJob(t, c, id, 10*time.Second, "attempt ended", firstAttemptEnded)
	if len(j.Attempts) != 1 || j.Attempts[0].FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST || j.State != hodeiv1.JobState_JOB_STATE_RETRYING {
		t.Errorf("job: state=%v attempts=%v, want its one attempt failed as worker_lost, the job retrying", j.State, j.Attempts)
	}
	eventually(t, 5*time.Second, "worker terminated", func() bool { return workerState(t, st, a.id) == "terminated" })
	t.Logf("worker events: %v", eventTypes(t, st, a.id))
}

// TestServerKill9WhileJobRuns: the only server is killed with SIGKILL in
// the middle of a job that prints 300 numbered lines; a new server starts
// on the same address and database. The agent reconnects within its
// retry interval (a few seconds), the job keeps its one attempt and
// succeeds, and `hodei job logs` prints lines 1..300 exactly once each,
// in order.
func TestServerKill9WhileJobRuns(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	addr := freeAddr(t)
	p := startServerOn(t, dbURL, addr, "--max-workers", "0")
	st := openStore(t, dbURL)
	agentMetrics := freeAddr(t)
	a := spawnAgent(t, st, []string{addr}, "--drain-timeout", "5s", "--grace", "1s", "--metrics-listen", agentMetrics)
	c := jobClient(addr)

	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", `for i in $(seq 1 300); do echo line $i; sleep 0.01; done`}})
	pollJob(t, c, id, 15*time.Second, "running", isRunning)
	// Kill once some output is stored, well before the end.
	eventually(t, 10*time.Second, "first log batches stored", func() bool {
		return queryOne[int64](t, st, "SELECT count(*) FROM job_logs WHERE job_id = $1", id) >= 2
	})
	replica := queryOne[string](t, st, "SELECT replica_id FROM workers WHERE id = $1", a.id)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	eventually(t, 5*time.Second, "killed server gone", func() bool { return processGone(p.cmd.Process.Pid) })
	if s := queryOne[string](t, st, "SELECT state FROM jobs WHERE id = $1", id); s != "running" {
		t.Fatalf("job %s when the server was killed; the test needs it running", s)
	}
	lines := queryOne[int64](t, st, "SELECT coalesce(sum(lines), 0) FROM job_logs WHERE job_id = $1", id)

	startServerOn(t, dbURL, addr, "--max-workers", "0")
	back := time.Now()
	var reconnected time.Duration
	eventually(t, 10*time.Second, "agent reconnected to the new server", func() bool {
		r := queryOne[string](t, st, "SELECT replica_id FROM workers WHERE id = $1", a.id)
		reconnected = time.Since(back)
		return r != replica
	})
	t.Logf("killed with %d lines stored; new server up %s after the kill; agent reconnected %s after that",
		lines, back.Sub(killed).Round(time.Millisecond), reconnected.Round(time.Millisecond))
	// While it holds an attempt the agent retries at least every quarter
	// of its fence (2.5 s with the default 10 s lease, 3 s with jitter);
	// the rest of the bound is room for a loaded machine.
	if reconnected > 5*time.Second {
		t.Errorf("agent reconnected %s after the server was back, want within 5s", reconnected)
	}

	j := pollJob(t, c, id, 20*time.Second, "final", isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 1 {
		t.Fatalf("job: state=%v attempts=%d, want SUCCEEDED with its one attempt", j.State, len(j.Attempts))
	}
	if n := queryOne[int64](t, st, "SELECT count(*) FROM attempts WHERE job_id = $1", id); n != 1 {
		t.Errorf("%d attempt rows, want 1", n)
	}
	if n := queryOne[int64](t, st, "SELECT count(*) FROM events WHERE aggregate_id = $1 AND type IN ('JobCompleted', 'JobFailed')", id); n != 1 {
		t.Errorf("%d result events for the job, want exactly 1", n)
	}

	r := serverProc{addr: addr}.hodei(t, "job", "logs", id)
	if r.code != 0 {
		t.Fatalf("hodei job logs: %+v", r)
	}
	var want strings.Builder
	for i := 1; i <= 300; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if r.stdout != want.String() {
		got := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		t.Errorf("hodei job logs: %d lines, want lines 1..300 exactly once in order; first difference: %s", len(got), firstDiff(got, strings.Split(strings.TrimSuffix(want.String(), "\n"), "\n")))
	}
	// The agent counts the reconnect and the job's lines, serves them on
	// --metrics-listen, and sends them to the new server with its beats.
	for name, want := range map[string]float64{"hodei_agent_reconnects_total": 1, "hodei_agent_reconnect_seconds_count": 1,
		"hodei_agent_log_lines_total": 300, "hodei_agent_log_lines_dropped_total": 0} {
		if got := metricValue(t, "http://"+agentMetrics, name); got != want {
			t.Errorf("agent's %s = %v, want %v", name, got, want)
		}
		if got := metricValue(t, "http://"+agentMetrics, "hodei_agent_reconnect_seconds_sum"); got <= 0 || got > reconnected.Seconds()+back.Sub(killed).Seconds()+1 {
			t.Errorf("agent's reconnect time %vs, want about %v", got, (back.Sub(killed) + reconnected).Round(time.Millisecond))
		}
		if name == "hodei_agent_reconnect_seconds_count" {
			continue
		}
		eventually(t, 10*time.Second, name+" of the worker on the server", func() bool {
			m := series(scrape(t, addr)[name], map[string]string{"provider": "test", "worker": a.id})
			return m != nil && m.GetCounter().GetValue() == want
		})
	}
}

func firstDiff(got, want []string) string {
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			return fmt.Sprintf("line %d: got %q, want %q", i+1, g, w)
		}
	}
	return "none"
}

// TestAgentSIGSTOPPastLeaseIsRetriedAndLateResultRejected: the agent
// running attempt 1 is stopped (SIGSTOP) for longer than the lease. The
// attempt fails as worker_lost and attempt 2 succeeds on the other agent.
// When the stopped agent resumes (SIGCONT) it reconnects, is told the
// attempt is no longer its own and cancels the process; its late result
// is rejected as stale and changes nothing.
func TestAgentSIGSTOPPastLeaseIsRetriedAndLateResultRejected(t *testing.T) {
	t.Parallel()
	// The lease must be well above the agents' 2 s heartbeat: the leader's
	// reaper compares it with last_seen, which is written every 2 s with
	// the time of the last heartbeat, so it lags by up to about 4 s.
	const lease = 6 * time.Second
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", lease.String())
	st := openStore(t, dbURL)
	agents := map[int]*agentProc{}
	for range 2 {
		a := spawnAgent(t, st, []string{p.addr}, "--grace", "1s")
		agents[a.pid()] = a
	}
	c := jobClient(p.addr)

	dir := t.TempDir()
	marker, ppidFile, pidFile := filepath.Join(dir, "marker"), filepath.Join(dir, "ppid"), filepath.Join(dir, "pid")
	script := fmt.Sprintf(`if [ -e %[1]s ]; then echo attempt $HODEI_ATTEMPT; exit 0; fi; touch %[1]s; echo $PPID > %[2]s; echo $$ > %[3]s; exec sleep 60`, marker, ppidFile, pidFile)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", script},
		Retry: &hodeiv1.RetryPolicy{MaxAttempts: 2, InitialBackoff: durationpb.New(10 * time.Millisecond)}})
	agentPID, _ := strconv.Atoi(waitFile(t, ppidFile))
	jobPID, _ := strconv.Atoi(waitFile(t, pidFile))
	t.Cleanup(func() { syscall.Kill(-jobPID, syscall.SIGKILL) })
	stopped := agents[agentPID]
	if stopped == nil {
		t.Fatalf("attempt 1 runs under pid %d, not one of the agents", agentPID)
	}
	pollJob(t, c, id, 10*time.Second, "running", isRunning)

	if err := syscall.Kill(agentPID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopAt := time.Now()
	t.Cleanup(func() { syscall.Kill(agentPID, syscall.SIGCONT) })
	j := pollJob(t, c, id, 3*lease, "final", isFinal)
	retried := time.Since(stopAt)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 2 {
		t.Fatalf("job: state=%v attempts=%d, want SUCCEEDED on attempt 2", j.State, len(j.Attempts))
	}
	a1, a2 := j.Attempts[0], j.Attempts[1]
	if a1.FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST || a1.WorkerId != stopped.id || a2.WorkerId == stopped.id {
		t.Fatalf("attempt 1: class=%v worker=%s; attempt 2 worker=%s; want worker_lost on %s and attempt 2 elsewhere", a1.FailureClass, a1.WorkerId, a2.WorkerId, stopped.id)
	}
	lost := a1.FinishedAt.AsTime().Sub(stopAt)
	t.Logf("lease %s: attempt 1 lost %s after SIGSTOP, job succeeded %s after SIGSTOP", lease, lost.Round(time.Millisecond), retried.Round(time.Millisecond))
	if lost < lease {
		t.Errorf("attempt 1 lost %s after the agent stopped, before the lease (%s)", lost, lease)
	}
	if out, _ := jobLogs(t, c, id); string(out) != "attempt 2\n" {
		t.Errorf("job stdout %q, want %q", out, "attempt 2\n")
	}

	stale := staleReports(t, p.addr)
	jobEvents := eventTypes(t, st, id)
	if err := syscall.Kill(agentPID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	cont := time.Now()
	// The resumed agent reconnects (backoff about 1 s), is told to cancel,
	// and its process ends within the grace (1 s; sleep dies on SIGTERM).
	eventually(t, 6*time.Second, "attempt 1's process cancelled after SIGCONT", func() bool { return processGone(jobPID) })
	t.Logf("attempt 1's process gone %s after SIGCONT", time.Since(cont).Round(time.Millisecond))
	eventually(t, 5*time.Second, "the late result counted as stale", func() bool { return staleReports(t, p.addr) > stale })

	after := getJob(c, id)
	if after.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || after.Attempt != 2 || len(after.Attempts) != 2 ||
		after.Attempts[0].FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST ||
		after.Attempts[0].ExitCode != a1.ExitCode || after.Attempts[0].Message != a1.Message ||
		!after.Attempts[0].FinishedAt.AsTime().Equal(a1.FinishedAt.AsTime()) {
		t.Errorf("after the late result: job %v attempt %d attempts %v; want it unchanged (SUCCEEDED, attempt 1 worker_lost %v)", after.State, after.Attempt, after.Attempts, a1)
	}
	if out, _ := jobLogs(t, c, id); string(out) != "attempt 2\n" {
		t.Errorf("job stdout after the late result %q, want %q", out, "attempt 2\n")
	}
	if evs := eventTypes(t, st, id); !slices.Equal(evs, jobEvents) {
		t.Errorf("job events after the late result %v, want them unchanged: %v", evs, jobEvents)
	}
	// The resumed agent is healthy again: connected, and not lost twice.
	eventually(t, 5*time.Second, "resumed agent connected", func() bool { return workerState(t, st, stopped.id) == "connected" })
	t.Logf("stopped worker events: %v", eventTypes(t, st, stopped.id))
}

// TestBinaryAndLongLineLogsAreExact: output with every byte value,
// invalid UTF-8, NULs, a 1 MiB line and a final line without newline is
// stored and read back through GetJobLogs byte for byte.
func TestBinaryAndLongLineLogsAreExact(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0")
	st := openStore(t, dbURL)
	spawnAgent(t, st, []string{p.addr})
	c := jobClient(p.addr)

	var data []byte
	for range 4 {
		for b := range 256 {
			data = append(data, byte(b))
		}
	}
	data = append(data, "\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\x00\x00\x00\r\n\n"...)
	for i := range 1 << 20 { // one 1 MiB line: no newline inside
		b := byte(i*7 + i>>8)
		if b == '\n' {
			b = 0
		}
		data = append(data, b)
	}
	data = append(data, '\n')
	data = append(data, "tail without newline \x00\xff"...)
	file := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}

	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"cat", file}})
	j := waitJob(t, c, id, 20*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v: %s", j.State, j.Message)
	}
	out, errOut := jobLogs(t, c, id)
	if !bytes.Equal(out, data) {
		n := 0
		for n < min(len(out), len(data)) && out[n] == data[n] {
			n++
		}
		t.Errorf("stdout read back: %d bytes, want %d; first difference at byte %d", len(out), len(data), n)
	}
	if len(errOut) != 0 {
		t.Errorf("stderr/system output %q, want none", errOut)
	}
}

// TestRefusedWorkerExits: a worker that was terminated while it was away
// is refused when it reconnects (WorkerRecoveryFailed) and its agent
// exits instead of running anything.
func TestRefusedWorkerExits(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	addr := freeAddr(t)
	a := startServerOn(t, dbURL, addr, "--max-workers", "0")
	st, err := store.Open(context.Background(), store.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ag := startAgent(t, st, []string{addr}, 1)
	id := ag.id
	eventually(t, 30*time.Second, "agent connected", func() bool { return workerState(t, st, id) == "connected" })
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.WorkerGone(context.Background(), id, "terminated", "test: terminated while away", true); err != nil {
		t.Fatal(err)
	}
	startServerOn(t, dbURL, addr, "--max-workers", "0")
	if code := ag.exit(t, 30*time.Second); code == 0 {
		t.Fatal("refused agent exited 0, want an error exit")
	}
	var n int
	if err := st.SQLForTests().QueryRow(context.Background(), "SELECT count(*) FROM events WHERE type = 'WorkerRecoveryFailed' AND aggregate_id = $1", id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no WorkerRecoveryFailed event")
	}
}

// TestDrainingAgentStaysDrainingAcrossAReconnect: an agent draining on
// SIGTERM (a long job still running, room for more) reconnects to a new
// server after the old one is killed, while a job waits. Its hello says
// that it drains, so the new server claims nothing for it, not even at
// once on its connect: the waiting job and one submitted after the
// reconnect go to another worker at their first attempt (the draining
// agent would refuse them, spending one of their attempts), and its
// running job keeps its one attempt.
func TestDrainingAgentStaysDrainingAcrossAReconnect(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	addr := freeAddr(t)
	p := startServerOn(t, dbURL, addr, "--max-workers", "0")
	st := openStore(t, dbURL)
	a := spawnAgent(t, st, []string{addr}, "--drain-timeout", "60s", "--grace", "1s", "--prefetch", "2")
	c := jobClient(addr)
	long := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sleep", "30"}})
	pollJob(t, c, long, 15*time.Second, "running", isRunning)
	if err := syscall.Kill(a.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	state := func() string { return queryOne[string](t, st, "SELECT state FROM workers WHERE id = $1", a.id) }
	eventually(t, 10*time.Second, "the worker draining", func() bool { return state() == "draining" })
	replica := queryOne[string](t, st, "SELECT replica_id FROM workers WHERE id = $1", a.id)
	waiting := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "killed server gone", func() bool { return processGone(p.cmd.Process.Pid) })
	startServerOn(t, dbURL, addr, "--max-workers", "0")
	eventually(t, 15*time.Second, "agent reconnected to the new server", func() bool {
		return queryOne[string](t, st, "SELECT replica_id FROM workers WHERE id = $1", a.id) != replica
	})
	eventually(t, 5*time.Second, "the worker draining again after its reconnect", func() bool { return state() == "draining" })
	short := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
	// A worker that takes jobs joins: the job must run there, at its first
	// attempt, not be handed first to the draining agent.
	other := spawnAgent(t, st, []string{addr})
	for name, id := range map[string]string{"waiting at the reconnect": waiting, "submitted after the reconnect": short} {
		if j := pollJob(t, c, id, 15*time.Second, "final", isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 1 || j.Attempts[0].WorkerId != other.id {
			t.Fatalf("the job %s: %v, attempts %v; want succeeded at its first attempt on %s, not on the draining %s", name, j.State, j.Attempts, other.id, a.id)
		}
	}
	if j := pollJob(t, c, long, 5*time.Second, "got", func(*hodeiv1.Job) bool { return true }); j.State != hodeiv1.JobState_JOB_STATE_RUNNING || len(j.Attempts) != 1 {
		t.Fatalf("the long job: %v with %d attempts, want running at its first", j.State, len(j.Attempts))
	}
}
