package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/platform"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// The Docker tests run against the real engine on this machine with
// images built locally (scripts/build-images.sh); without an engine they
// skip loudly.

var dockerOnce struct {
	sync.Once
	skip string
}

func needDocker(t *testing.T) {
	t.Helper()
	dockerOnce.Do(func() {
		if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
			dockerOnce.skip = fmt.Sprintf("no Docker engine reachable: %v: %s", err, out)
			return
		}
		if out, err := exec.Command("bash", "../../scripts/build-images.sh").CombinedOutput(); err != nil {
			dockerOnce.skip = fmt.Sprintf("build images: %v: %s", err, out)
		}
	})
	if dockerOnce.skip != "" {
		fmt.Fprintf(os.Stderr, "\n*** DOCKER TESTS SKIPPED: %s ***\n\n", dockerOnce.skip)
		t.Skip("DOCKER TESTS SKIPPED: " + dockerOnce.skip)
	}
}

// containers counts this installation's worker containers (any state).
func containers(t *testing.T, install string) int {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=dev.hodei.install-id="+install).Output()
	if err != nil {
		t.Fatal(err)
	}
	return len(strings.Fields(string(out)))
}

func installID(t *testing.T, dbURL string) (*store.Store, string) {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	id, err := st.InstallationID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The servers of a test stop, and with them the only server its
	// workers know: remove what is left of them (they would retry forever).
	t.Cleanup(func() {
		out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=dev.hodei.install-id="+id).Output()
		if ids := strings.Fields(string(out)); len(ids) > 0 {
			_ = exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
		}
	})
	return st, id
}

// TestDockerAutoscaleImageX: from zero workers, 20 jobs naming image X
// with a Docker provider limited to 4 workers: at most 4 containers at
// any moment, all 20 run in image X and succeed, idle containers are
// removed after the idle timeout, and none is left behind.
func TestDockerAutoscaleImageX(t *testing.T) {
	needDocker(t)
	t.Parallel()
	dbURL := storetest.URL(t)
	_, install := installID(t, dbURL)
	c := inProcessWith(t, platform.Config{DatabaseURL: dbURL, IdleTimeout: time.Second,
		Docker: platform.DockerConfig{MaxWorkers: 4, Image: "hodei-worker:dev", Binary: hodeiBin}})
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, submit(t, c, &hodeiv1.JobSpec{Image: "hodei-test-x:dev", Command: []string{"sh", "-c", "cat /etc/hodei-image; sleep 0.2"}}))
	}
	peak := 0
	deadline := time.Now().Add(90 * time.Second)
	for _, id := range ids {
		eventually(t, time.Until(deadline), "job "+id+" done", func() bool {
			peak = max(peak, containers(t, install))
			r, err := c.GetJob(context.Background(), connect.NewRequest(&hodeiv1.GetJobRequest{Id: id}))
			if err != nil {
				t.Fatal(err)
			}
			j := r.Msg.Job
			if j.FinishedAt != nil && j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
				t.Fatalf("job %s: %v %s", id, j.State, j.Message)
			}
			return j.FinishedAt != nil
		})
	}
	if peak > 4 || peak == 0 {
		t.Fatalf("peak containers %d, want 1..4", peak)
	}
	// The job ran in image X: its output names it.
	logs, err := c.GetJobLogs(context.Background(), connect.NewRequest(&hodeiv1.GetJobLogsRequest{Id: ids[0]}))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for logs.Receive() {
		for _, ch := range logs.Msg().Chunks {
			out.Write(ch.Data)
		}
	}
	if !strings.Contains(out.String(), "hodei-test-x") {
		t.Fatalf("job output %q does not show image X", out.String())
	}
	eventually(t, time.Until(deadline), "every container removed after the idle timeout", func() bool { return containers(t, install) == 0 })
	t.Logf("peak %d containers; all removed after the idle timeout", peak)
}

// TestDockerOrphansRemovedAfterServerKill: the server is killed with
// SIGKILL while Docker workers run jobs; a new server on the same
// database (another address, so the old workers cannot reconnect)
// expires them after the lease and removes their containers: no orphan
// remains.
func TestDockerOrphansRemovedAfterServerKill(t *testing.T) {
	needDocker(t)
	t.Parallel()
	dbURL := storetest.URL(t)
	_, install := installID(t, dbURL)
	args := []string{"--max-workers", "0", "--docker-max-workers", "2", "--docker-binary", hodeiBin, "--lease", "2s", "--idle-timeout", "1s"}
	a := startServerOn(t, dbURL, freeAddr(t), args...)
	for i := 0; i < 2; i++ {
		if r := a.hodei(t, "job", "submit", "--", "sleep", "30"); r.code != 0 {
			t.Fatalf("submit: %+v", r)
		}
	}
	st, _ := installID(t, dbURL)
	running := func() int {
		var n int
		if err := st.SQLForTests().QueryRow(context.Background(), "SELECT count(*) FROM jobs WHERE state = 'running'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually(t, 60*time.Second, "both jobs running", func() bool { return running() == 2 })
	if n := containers(t, install); n != 2 {
		t.Fatalf("%d containers, want 2", n)
	}
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	startServerOn(t, dbURL, freeAddr(t), args...)
	eventually(t, 60*time.Second, "no orphan container left", func() bool { return containers(t, install) == 0 })
}

// socketProxy forwards connections on a unix socket to the Docker
// engine's socket, so a test can make the engine vanish and come back.
type socketProxy struct {
	path  string
	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool // open client connections: stop closes them
}

func (p *socketProxy) start(t *testing.T) {
	t.Helper()
	os.Remove(p.path)
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.conns == nil {
				p.conns = map[net.Conn]bool{}
			}
			p.conns[c] = true
			p.mu.Unlock()
			go func() {
				defer func() {
					p.mu.Lock()
					delete(p.conns, c)
					p.mu.Unlock()
					c.Close()
				}()
				u, err := net.Dial("unix", "/var/run/docker.sock")
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
}

func (p *socketProxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	// A kept-alive connection would still reach the engine.
	for c := range p.conns {
		c.Close()
	}
}

// TestDockerProviderHealth: with the engine unreachable the provider is
// marked unhealthy within one check interval, its jobs wait and explain
// names it; when the engine is back, ProviderRecovered and the job runs.
func TestDockerProviderHealth(t *testing.T) {
	needDocker(t)
	t.Parallel()
	dbURL := storetest.URL(t)
	st, _ := installID(t, dbURL)
	proxy := &socketProxy{path: filepath.Join(t.TempDir(), "docker.sock")}
	proxy.start(t) // up at start: the provider is built against a live engine
	t.Cleanup(proxy.stop)
	interval := 500 * time.Millisecond
	c := inProcessWith(t, platform.Config{DatabaseURL: dbURL, IdleTimeout: time.Second, HealthInterval: interval,
		Docker: platform.DockerConfig{MaxWorkers: 2, Image: "hodei-worker:dev", Binary: hodeiBin, Host: "unix://" + proxy.path}})
	proxy.stop()
	healthy := func() bool {
		var h bool
		if err := st.SQLForTests().QueryRow(context.Background(), "SELECT healthy FROM providers WHERE name = 'docker'").Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	start := time.Now()
	eventually(t, 6*interval, "provider marked unhealthy within a check interval (plus start-up)", func() bool { return !healthy() })
	t.Logf("unhealthy %s after the engine went away (interval %s)", time.Since(start).Round(time.Millisecond), interval)
	id := submit(t, c, &hodeiv1.JobSpec{Image: "hodei-test-x:dev", Command: []string{"true"}})
	r, err := c.ExplainJob(context.Background(), connect.NewRequest(&hodeiv1.ExplainJobRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if all := strings.Join(r.Msg.Reasons, "\n"); r.Msg.State != hodeiv1.JobState_JOB_STATE_QUEUED || !strings.Contains(all, "docker") || !strings.Contains(all, "unhealthy") {
		t.Fatalf("explain: %v %q, want queued and the unhealthy docker provider named", r.Msg.State, r.Msg.Reasons)
	}
	proxy.start(t)
	j := waitJob(t, c, id, 60*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job after recovery: %v %s", j.State, j.Message)
	}
	var recovered int
	if err := st.SQLForTests().QueryRow(context.Background(), "SELECT count(*) FROM events WHERE type = 'ProviderRecovered' AND aggregate_id = 'docker'").Scan(&recovered); err != nil {
		t.Fatal(err)
	}
	if recovered != 1 {
		t.Fatalf("%d ProviderRecovered events, want 1", recovered)
	}
}

// TestDockerWorkerGetsTheJobsResources: a worker started for a job with
// resources runs with those CPU and memory limits.
func TestDockerWorkerGetsTheJobsResources(t *testing.T) {
	needDocker(t)
	t.Parallel()
	dbURL := storetest.URL(t)
	_, install := installID(t, dbURL)
	c := inProcessWith(t, platform.Config{DatabaseURL: dbURL, IdleTimeout: time.Minute,
		Docker: platform.DockerConfig{MaxWorkers: 1, Image: "hodei-worker:dev", Binary: hodeiBin}})
	id := submit(t, c, &hodeiv1.JobSpec{Image: "hodei-test-x:dev", Command: []string{"true"},
		Resources: &hodeiv1.Resources{CpuMillis: 500, MemoryMib: 64}})
	if j := waitJob(t, c, id, 60*time.Second, isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job: %v %s", j.State, j.Message)
	}
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=dev.hodei.install-id="+install).Output()
	if err != nil || len(strings.Fields(string(out))) != 1 {
		t.Fatalf("containers: %q %v, want one", out, err)
	}
	limits, err := exec.Command("docker", "inspect", "--format", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", strings.TrimSpace(string(out))).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(limits)), fmt.Sprintf("%d %d", 500_000_000, 64<<20); got != want {
		t.Fatalf("container limits %q, want %q (NanoCpus Memory)", got, want)
	}
}

// TestDockerContainerKilledWhileDrainingLosesItsJobAtOnce: a worker's
// container is sent SIGTERM (its agent drains: the job may finish) and
// then killed; the engine's report of its death fails the attempt as
// worker_lost at once, not when the lease runs out, and the retry
// succeeds in a new container.
func TestDockerContainerKilledWhileDrainingLosesItsJobAtOnce(t *testing.T) {
	needDocker(t)
	t.Parallel()
	dbURL := storetest.URL(t)
	st, install := installID(t, dbURL)
	const lease = time.Minute
	c := inProcessWith(t, platform.Config{DatabaseURL: dbURL, IdleTimeout: time.Minute, Lease: lease,
		Docker: platform.DockerConfig{MaxWorkers: 1, Image: "hodei-worker:dev", Binary: hodeiBin}})
	id := submit(t, c, &hodeiv1.JobSpec{Image: "hodei-test-x:dev", Command: []string{"sh", "-c", `[ "$HODEI_ATTEMPT" = 2 ] && exit 0; exec sleep 600`},
		Retry: &hodeiv1.RetryPolicy{MaxAttempts: 2, InitialBackoff: durationpb.New(10 * time.Millisecond)}})
	j := waitJob(t, c, id, 60*time.Second, func(j *hodeiv1.Job) bool { return j.State == hodeiv1.JobState_JOB_STATE_RUNNING })
	worker := j.Attempts[0].WorkerId
	out, err := exec.Command("docker", "ps", "-q", "--filter", "label=dev.hodei.install-id="+install).Output()
	if err != nil || len(strings.Fields(string(out))) != 1 {
		t.Fatalf("containers: %q %v, want one", out, err)
	}
	container := strings.TrimSpace(string(out))
	if out, err := exec.Command("docker", "kill", "--signal", "TERM", container).CombinedOutput(); err != nil {
		t.Fatalf("docker kill --signal TERM: %v: %s", err, out)
	}
	eventually(t, 10*time.Second, "the worker draining", func() bool {
		return queryOne[string](t, st, "SELECT state FROM workers WHERE id = $1", worker) == "draining"
	})
	killed := time.Now()
	if out, err := exec.Command("docker", "kill", container).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v: %s", err, out)
	}
	j = waitJob(t, c, id, lease+30*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 2 {
		t.Fatalf("job: %v with %d attempts, want SUCCEEDED on attempt 2", j.State, len(j.Attempts))
	}
	a1 := j.Attempts[0]
	if lost := a1.FinishedAt.AsTime().Sub(killed); a1.FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST || lost > lease/4 {
		t.Fatalf("attempt 1: %v %s after its draining container was killed; want worker_lost at once (lease %s)", a1.FailureClass, lost, lease)
	} else {
		t.Logf("attempt 1 lost %s after its draining container was killed (lease %s)", lost.Round(time.Millisecond), lease)
	}
}
