package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/platform"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
	"github.com/hodei-dev/hodei/internal/testbin"
)

// inProcess runs the platform in this test process (agents are real
// subprocesses of the hodei binary) and returns a job client.
func inProcess(t *testing.T, lease time.Duration, maxWorkers int) hodeiv1connect.JobServiceClient {
	t.Helper()
	return inProcessWith(t, platform.Config{MaxWorkers: maxWorkers, Lease: lease})
}

// inProcessWith runs the platform with pc (listen address, database,
// agent binary and readiness are filled in).
func inProcessWith(t *testing.T, pc platform.Config) hodeiv1connect.JobServiceClient {
	t.Helper()
	c, _ := inProcessAt(t, pc)
	return c
}

// inProcessAt is inProcessWith that also returns the server's address.
func inProcessAt(t *testing.T, pc platform.Config) (hodeiv1connect.JobServiceClient, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan string, 1)
	errc := make(chan error, 1)
	if pc.DatabaseURL == "" {
		pc.DatabaseURL = storetest.URL(t)
	}
	pc.Listen, pc.AgentBinary = "127.0.0.1:0", hodeiBin
	if pc.TLS.CA == nil && !pc.TLS.InsecurePlaintext {
		pc.TLS.CA = testbin.CA()
	}
	pc.Ready = func(a string) { readyc <- a }
	go func() { errc <- platform.Run(ctx, storetest.Logger(t), pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("platform: %v", err)
		}
	})
	select {
	case addr := <-readyc:
		tok := dbToken(t, pc.DatabaseURL)
		serveToken(addr, func() string { return tok })
		return hodeiv1connect.NewJobServiceClient(apiClient(addr), "https://"+addr, connect.WithGRPC()), addr
	case err := <-errc:
		t.Fatalf("platform: %v", err)
	}
	return nil, ""
}

func submit(t *testing.T, c hodeiv1connect.JobServiceClient, spec *hodeiv1.JobSpec) string {
	t.Helper()
	r, err := c.SubmitJob(context.Background(), connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.Job.Id
}

// waitJob waits until cond holds for the job, or fails after timeout.
func waitJob(t *testing.T, c hodeiv1connect.JobServiceClient, id string, timeout time.Duration, cond func(*hodeiv1.Job) bool) *hodeiv1.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	w, err := c.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var last *hodeiv1.Job
	for w.Receive() {
		last = w.Msg().Job
		if cond(last) {
			// The watch sends state changes; re-read for the attempts.
			r, err := c.GetJob(context.Background(), connect.NewRequest(&hodeiv1.GetJobRequest{Id: id}))
			if err != nil {
				t.Fatal(err)
			}
			return r.Msg.Job
		}
	}
	t.Fatalf("job %s: condition not met within %s; last state %v (watch: %v)", id, timeout, last.GetState(), w.Err())
	return nil
}

func isFinal(j *hodeiv1.Job) bool { return j.FinishedAt != nil }

func TestExitCodeOutsideRetryableSetFailsWithoutRetry(t *testing.T) {
	t.Parallel()
	c := inProcess(t, 0, 2)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", "exit 3"},
		Retry: &hodeiv1.RetryPolicy{MaxAttempts: 3, RetryableExitCodes: []int32{7}, InitialBackoff: durationpb.New(10 * time.Millisecond)}})
	j := waitJob(t, c, id, 30*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_FAILED || len(j.Attempts) != 1 || j.ExitCode != 3 {
		t.Fatalf("state=%v attempts=%d exit=%d, want FAILED after 1 attempt with exit 3", j.State, len(j.Attempts), j.ExitCode)
	}
}

func TestRetryableExitCodeIsRetriedUntilExhausted(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	c, addr := inProcessAt(t, platform.Config{DatabaseURL: dbURL, MaxWorkers: 2})
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", "exit 7"},
		Retry: &hodeiv1.RetryPolicy{MaxAttempts: 3, RetryableExitCodes: []int32{7}, InitialBackoff: durationpb.New(10 * time.Millisecond)}})
	j := waitJob(t, c, id, 30*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_FAILED || len(j.Attempts) != 3 || j.ExitCode != 7 {
		t.Fatalf("state=%v attempts=%d exit=%d, want FAILED after 3 attempts with exit 7", j.State, len(j.Attempts), j.ExitCode)
	}
	st, err := store.Open(context.Background(), store.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var scheduled, exhausted int
	if err := st.SQLForTests().QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE type = 'JobRetryScheduled'),
		count(*) FILTER (WHERE type = 'JobRetryExhausted') FROM events WHERE aggregate_id = $1`, id).Scan(&scheduled, &exhausted); err != nil {
		t.Fatal(err)
	}
	if scheduled != 2 || exhausted != 1 {
		t.Fatalf("JobRetryScheduled=%d JobRetryExhausted=%d, want 2 and 1", scheduled, exhausted)
	}
	// The leader's metrics, from the job events its lazy tail decodes
	// only for JobCompleted and JobFailed.
	metricsAre := func(scheduled, exhausted, ended, attempts float64) {
		t.Helper()
		eventually(t, 10*time.Second, "retry and attempt metrics", func() bool {
			return metricValue(t, addr, `hodei_job_retries_total{outcome="scheduled"}`) == scheduled &&
				metricValue(t, addr, `hodei_job_retries_total{outcome="exhausted"}`) == exhausted &&
				metricValue(t, addr, "hodei_job_attempts_count") == ended &&
				metricValue(t, addr, "hodei_job_attempts_sum") == attempts
		})
	}
	metricsAre(2, 1, 1, 3)
	// A manual retry of the failed job runs a fourth attempt.
	if _, err := c.RetryJob(context.Background(), connect.NewRequest(&hodeiv1.RetryJobRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, c, id, 30*time.Second, func(j *hodeiv1.Job) bool { return isFinal(j) && j.Attempt == 6 })
	if len(j.Attempts) != 6 {
		t.Fatalf("after manual retry: %d attempts, want 6 (3 more)", len(j.Attempts))
	}
	metricsAre(2+1+2, 2, 2, 3+6) // the manual retry is a JobRetryScheduled too
}

func TestTimeoutEndsTimedOut(t *testing.T) {
	t.Parallel()
	c := inProcess(t, 0, 1)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sleep", "30"}, Timeout: durationpb.New(300 * time.Millisecond)})
	j := waitJob(t, c, id, 30*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_TIMED_OUT || j.FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_TIMEOUT {
		t.Fatalf("state=%v class=%v, want TIMED_OUT", j.State, j.FailureClass)
	}
}

// processGone reports whether pid has exited (or is a zombie nobody reaped).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func waitFile(t *testing.T, path string) string {
	t.Helper()
	var b []byte
	eventually(t, 30*time.Second, path+" written", func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil && strings.HasSuffix(string(b), "\n")
	})
	return strings.TrimSpace(string(b))
}

func TestCancelStopsTheRunningProcess(t *testing.T) {
	t.Parallel()
	c := inProcess(t, 0, 1)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", "echo $$ > " + pidFile + "; exec sleep 600"}})
	pid, _ := strconv.Atoi(waitFile(t, pidFile))
	if _, err := c.CancelJob(context.Background(), connect.NewRequest(&hodeiv1.CancelJobRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, c, id, 5*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("state=%v, want CANCELLED", j.State)
	}
	// Within the agent's grace period (10 s).
	eventually(t, 10*time.Second, "the job's process gone", func() bool { return processGone(pid) })
}

// TestLostWorkerIsRetriedOnAnotherWorker kills the agent running a job
// with SIGKILL: after the lease the attempt fails as worker_lost and the
// retry succeeds on a new worker.
func TestLostWorkerIsRetriedOnAnotherWorker(t *testing.T) {
	t.Parallel()
	c := inProcess(t, time.Second, 2)
	dir := t.TempDir()
	marker, ppid, pidFile := filepath.Join(dir, "marker"), filepath.Join(dir, "ppid"), filepath.Join(dir, "pid")
	script := fmt.Sprintf(`if [ -e %[1]s ]; then exit 0; fi; touch %[1]s; echo $PPID > %[2]s; echo $$ > %[3]s; exec sleep 600`, marker, ppid, pidFile)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", script},
		Retry: &hodeiv1.RetryPolicy{MaxAttempts: 2, InitialBackoff: durationpb.New(10 * time.Millisecond)}})
	agentPID, _ := strconv.Atoi(waitFile(t, ppid))
	jobPID, _ := strconv.Atoi(waitFile(t, pidFile))
	t.Cleanup(func() { syscall.Kill(-jobPID, syscall.SIGKILL) }) // the orphaned process group of the killed agent
	if err := syscall.Kill(agentPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, c, id, 30*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 2 {
		t.Fatalf("state=%v attempts=%d, want SUCCEEDED on attempt 2", j.State, len(j.Attempts))
	}
	a1, a2 := j.Attempts[0], j.Attempts[1]
	if a1.FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST || a1.WorkerId == a2.WorkerId {
		t.Fatalf("attempt 1: class=%v worker=%s; attempt 2 worker=%s; want worker_lost and another worker", a1.FailureClass, a1.WorkerId, a2.WorkerId)
	}
}

// TestExplainNamesTheMissingLabel: a job needing a label no worker or
// provider offers stays queued, gets JobSchedulingFailed, and explain
// names the label.
func TestExplainNamesTheMissingLabel(t *testing.T) {
	t.Parallel()
	c := inProcess(t, 0, 1)
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}, Labels: map[string]string{"gpu": "true"}})
	// A job without labels runs meanwhile: the platform is not stuck.
	ok := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
	if j := waitJob(t, c, ok, 30*time.Second, isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("unlabelled job: %v", j.State)
	}
	r, err := c.ExplainJob(context.Background(), connect.NewRequest(&hodeiv1.ExplainJobRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(r.Msg.Reasons, "\n")
	if r.Msg.State != hodeiv1.JobState_JOB_STATE_QUEUED || !strings.Contains(all, "gpu=true") {
		t.Fatalf("explain: state=%v reasons=%q, want queued and the label gpu=true named", r.Msg.State, r.Msg.Reasons)
	}
	t.Logf("explain: %q", r.Msg.Reasons)
}

// TestAutoscalerStaysWithinMaxWorkersAndScalesDown: from zero workers,
// 20 jobs with a provider limited to 4 workers: never more than 4 live
// workers, every job succeeds, idle workers are stopped after the idle
// timeout and none is left behind.
func TestAutoscalerStaysWithinMaxWorkersAndScalesDown(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	c := inProcessWith(t, platform.Config{DatabaseURL: dbURL, MaxWorkers: 4, IdleTimeout: time.Second})
	st, err := store.Open(context.Background(), store.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	live := func() int {
		var n int
		if err := st.SQLForTests().QueryRow(context.Background(), "SELECT count(*) FROM workers WHERE state <> 'terminated'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, submit(t, c, &hodeiv1.JobSpec{Command: []string{"sleep", "0.2"}}))
	}
	peak := 0
	deadline := time.Now().Add(60 * time.Second)
	eventually(t, time.Until(deadline), "every job succeeded", func() bool {
		peak = max(peak, live())
		var done int
		if err := st.SQLForTests().QueryRow(context.Background(), "SELECT count(*) FROM jobs WHERE state = 'succeeded'").Scan(&done); err != nil {
			t.Fatal(err)
		}
		return done == len(ids)
	})
	if peak > 4 || peak == 0 {
		t.Fatalf("peak live workers %d, want 1..4", peak)
	}
	eventually(t, time.Until(deadline), "every worker stopped after the idle timeout", func() bool { return live() == 0 })
	t.Logf("peak %d workers; all scaled down", peak)
}

// TestAJobBehindAnUnservableBacklogGetsAWorker: more jobs than the
// autoscaler reads at once wait for a label no provider has; a job
// behind them that the process provider can run still gets a worker
// started for it, and runs.
func TestAJobBehindAnUnservableBacklogGetsAWorker(t *testing.T) {
	t.Parallel()
	c := inProcessWith(t, platform.Config{DatabaseURL: storetest.URL(t), MaxWorkers: 1})
	spec := &hodeiv1.JobSpec{Command: []string{"true"}, Labels: map[string]string{"gpu": "true"}}
	for range 3 {
		req := &hodeiv1.SubmitJobsRequest{}
		for range 500 {
			req.Specs = append(req.Specs, spec)
		}
		if _, err := c.SubmitJobs(context.Background(), connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
	}
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
	if j := waitJob(t, c, id, 30*time.Second, isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("the job behind 1,500 unservable ones: %v, want succeeded", j.State)
	}
}

// TestEphemeralWorkersTakeOneJobEach: with the provider in ephemeral mode
// every job runs on a worker of its own, which then goes away.
func TestEphemeralWorkersTakeOneJobEach(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	c, addr := inProcessAt(t, platform.Config{DatabaseURL: dbURL, MaxWorkers: 2, IdleTimeout: time.Minute})
	providers := hodeiv1connect.NewProviderServiceClient(apiClient(addr), "https://"+addr, connect.WithGRPC())
	on := true
	if _, err := providers.UpdateProvider(context.Background(), connect.NewRequest(&hodeiv1.UpdateProviderRequest{Name: "process", Ephemeral: &on})); err != nil {
		t.Fatal(err)
	}
	workers := map[string]bool{}
	for i := 0; i < 4; i++ {
		id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
		j := waitJob(t, c, id, 30*time.Second, isFinal)
		if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 1 {
			t.Fatalf("job %d: %v with %d attempts", i, j.State, len(j.Attempts))
		}
		w := j.Attempts[0].WorkerId
		if workers[w] {
			t.Fatalf("worker %s ran a second job", w)
		}
		workers[w] = true
	}
	st, err := store.Open(context.Background(), store.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eventually(t, 30*time.Second, "every ephemeral worker gone", func() bool {
		var live int
		if err := st.SQLForTests().QueryRow(context.Background(), "SELECT count(*) FROM workers WHERE state <> 'terminated'").Scan(&live); err != nil {
			t.Fatal(err)
		}
		return live == 0
	})
}

// oneSlotPlatform starts a server on a fresh database with one agent of
// one slot (agentArgs added to its command line), and returns the store,
// a client and the server's address.
func oneSlotPlatform(t *testing.T, agentArgs ...string) (*store.Store, hodeiv1connect.JobServiceClient, string) {
	t.Helper()
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0")
	st := openStore(t, dbURL)
	startAgent(t, st, []string{p.addr}, 1, agentArgs...)
	return st, hodeiv1connect.NewJobServiceClient(apiClient(p.addr), "https://"+p.addr, connect.WithGRPC()), p.addr
}

// TestFailedDispatchPassLeavesNothingAndRecovers: while every claim fails
// (a constraint refuses to start an attempt on a job row), the job stays queued with no
// attempt, the failures are counted, and once claims work again the job
// runs without any new trigger (the dispatcher retries on its own).
func TestFailedDispatchPassLeavesNothingAndRecovers(t *testing.T) {
	t.Parallel()
	st, c, addr := oneSlotPlatform(t)
	ctx := context.Background()
	if _, err := st.SQLForTests().Exec(ctx, "ALTER TABLE jobs ADD CONSTRAINT test_refuse CHECK (attempt_token IS NULL) NOT VALID"); err != nil {
		t.Fatal(err)
	}
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
	eventually(t, 10*time.Second, "a failed dispatch pass counted", func() bool {
		return metricValue(t, addr, "hodei_dispatch_pass_failures_total") >= 1
	})
	var state string
	var attempts int
	if err := st.SQLForTests().QueryRow(ctx, "SELECT state, (SELECT count(*) FROM attempts WHERE job_id = $1) FROM jobs WHERE id = $1", id).Scan(&state, &attempts); err != nil {
		t.Fatal(err)
	}
	if state != "queued" || attempts != 0 {
		t.Fatalf("after a failed claim: state=%s attempts=%d, want queued with none", state, attempts)
	}
	if _, err := st.SQLForTests().Exec(ctx, "ALTER TABLE jobs DROP CONSTRAINT test_refuse"); err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, c, id, 10*time.Second, isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("state=%v, want SUCCEEDED", j.State)
	}
}

// TestPrefetchedJobsWaitForASlot: an agent with one slot and --prefetch 1
// takes a second job while its first runs. The prefetched job starts only
// when the slot frees (never two at once), and one cancelled while it
// waits ends cancelled without ever running.
func TestPrefetchedJobsWaitForASlot(t *testing.T) {
	t.Parallel()
	_, c, _ := oneSlotPlatform(t, "--prefetch", "1")
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	sh := func(script string) *hodeiv1.JobSpec { return &hodeiv1.JobSpec{Command: []string{"sh", "-c", script}} }
	assigned := func(j *hodeiv1.Job) bool { return j.State == hodeiv1.JobState_JOB_STATE_ASSIGNED }

	first := submit(t, c, sh(fmt.Sprintf("echo started > %s; while [ ! -e %s ]; do sleep 0.05; done", path("first.started"), path("release"))))
	waitFile(t, path("first.started"))

	cancelled := submit(t, c, sh("touch "+path("cancelled.ran")))
	waitJob(t, c, cancelled, 10*time.Second, assigned)
	if _, err := c.CancelJob(context.Background(), connect.NewRequest(&hodeiv1.CancelJobRequest{Id: cancelled})); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, c, cancelled, 10*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_CANCELLED || len(j.Attempts) != 1 || j.Attempts[0].StartedAt != nil {
		t.Fatalf("cancelled while prefetched: state=%v attempts=%v, want CANCELLED with one attempt that never started", j.State, j.Attempts)
	}

	// The prefetched job notes if it ever runs before the first one was
	// released; while the first runs, its state must stay assigned.
	second := submit(t, c, sh(fmt.Sprintf("[ -e %s ] || echo overlap > %s; touch %s", path("release"), path("overlap"), path("second.ran"))))
	waitJob(t, c, second, 10*time.Second, assigned)
	stateStays(t, c, second, hodeiv1.JobState_JOB_STATE_ASSIGNED, "the prefetched job, while the only slot was busy,")
	if err := os.WriteFile(path("release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{first, second} {
		if j := waitJob(t, c, id, 10*time.Second, isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
			t.Fatalf("job %s: state=%v, want SUCCEEDED", id, j.State)
		}
	}
	if _, err := os.Stat(path("cancelled.ran")); err == nil {
		t.Fatal("the cancelled prefetched job ran")
	}
	if _, err := os.Stat(path("overlap")); err == nil {
		t.Fatal("the prefetched job ran while the only slot was busy")
	}
}

// stateStays watches job id for half a second and fails if it leaves
// state want meanwhile; what names the job and the situation.
func stateStays(t *testing.T, c hodeiv1connect.JobServiceClient, id string, want hodeiv1.JobState, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	w, err := c.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	for w.Receive() {
		if st := w.Msg().Job.State; st != want {
			t.Fatalf("%s went %v", what, st)
		}
	}
}

// TestAdaptivePrefetchHoldsBackLongJobs: an agent with --prefetch auto
// (the default) whose one slot runs a long job is sent no second job: it
// stays queued, free to go to any worker, until the slot frees. (With a
// fixed prefetch it would be assigned to this worker at once.)
func TestAdaptivePrefetchHoldsBackLongJobs(t *testing.T) {
	t.Parallel()
	_, c, _ := oneSlotPlatform(t, "--prefetch", "auto")
	dir := t.TempDir()
	started, release := filepath.Join(dir, "started"), filepath.Join(dir, "release")
	first := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", fmt.Sprintf("echo started > %s; while [ ! -e %s ]; do sleep 0.05; done", started, release)}})
	waitFile(t, started)
	second := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
	stateStays(t, c, second, hodeiv1.JobState_JOB_STATE_QUEUED, "the second job, while the only slot ran a long job,")
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{first, second} {
		if j := waitJob(t, c, id, 10*time.Second, isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
			t.Fatalf("job %s: state=%v, want SUCCEEDED", id, j.State)
		}
	}
}

// TestSlotIsFreeWhenTheResultArrives: a worker's slot is free for the next
// job as soon as its result reaches the server, not once the result is
// committed. The first job's row is locked by the test, so its result
// cannot be committed; the second job must still be claimed for the one
// slot meanwhile.
func TestSlotIsFreeWhenTheResultArrives(t *testing.T) {
	t.Parallel()
	st, c, _ := oneSlotPlatform(t)
	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	running := func(j *hodeiv1.Job) bool { return j.State == hodeiv1.JobState_JOB_STATE_RUNNING }

	first := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done", release)}})
	waitJob(t, c, first, 10*time.Second, running)
	ctx := context.Background()
	tx, err := st.SQLForTests().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", first); err != nil {
		t.Fatal(err)
	}
	second := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The first job's result is now stuck behind the lock; the second job
	// gets an attempt (the claim does not touch the locked row).
	eventually(t, 10*time.Second, "the second job claimed while the first one's result waits to be committed", func() bool {
		var attempts int
		if err := st.SQLForTests().QueryRow(ctx, "SELECT count(*) FROM attempts WHERE job_id = $1", second).Scan(&attempts); err != nil {
			t.Fatal(err)
		}
		return attempts > 0
	})
	var firstState string
	if err := st.SQLForTests().QueryRow(ctx, "SELECT state FROM jobs WHERE id = $1", first).Scan(&firstState); err != nil {
		t.Fatal(err)
	}
	if firstState != "running" {
		t.Fatalf("first job is %s while its row is locked, want running (the test did not hold its result back)", firstState)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{first, second} {
		if j := waitJob(t, c, id, 10*time.Second, isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
			t.Fatalf("job %s: state=%v, want SUCCEEDED", id, j.State)
		}
	}
}
