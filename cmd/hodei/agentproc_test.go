package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/store"
)

// Helpers of the tests that run `hodei server` and `hodei agent` as real
// processes: spawning agents, reading jobs, rows, events and metrics.

// agentProc is a `hodei agent` subprocess with its worker identity.
type agentProc struct {
	id   string // worker id
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{} // closed when the process has exited (and been reaped)
}

// spawnAgent enrolls a worker in st and runs `hodei agent --server servers
// args...` until the test ends. The agent runs in its own process group.
func spawnAgent(t *testing.T, st *store.Store, servers []string, args ...string) *agentProc {
	t.Helper()
	return spawnAgentFrom(t, st, hodeiBin, nil, servers, args...)
}

// spawnAgentFrom is spawnAgent with the binary bin, calling started (if
// not nil) with the agent's pid as soon as it runs bin's code.
func spawnAgentFrom(t *testing.T, st *store.Store, bin string, started func(pid int), servers []string, args ...string) *agentProc {
	t.Helper()
	id, token, err := st.NewWorker(context.Background(), "test", "", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a := &agentProc{id: id, logs: &syncBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(bin, append([]string{"agent", "--server", strings.Join(servers, ",")}, args...)...)
	a.cmd.Env = append(os.Environ(), "HODEI_BOOTSTRAP_TOKEN="+token)
	a.cmd.Stdout, a.cmd.Stderr = a.logs, a.logs
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if started != nil {
		started(a.cmd.Process.Pid)
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		pid := a.cmd.Process.Pid
		_ = syscall.Kill(pid, syscall.SIGCONT) // in case a test left it stopped
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-a.done
		}
		if t.Failed() {
			t.Logf("agent %s (pid %d) log:\n%s", a.id, pid, a.logs.String())
		}
	})
	return a
}

func (a *agentProc) pid() int { return a.cmd.Process.Pid }

// exit waits for the agent to exit and returns its exit code.
func (a *agentProc) exit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-a.done:
		return a.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("agent %s did not exit within %s", a.id, timeout)
		return -1
	}
}

func jobClient(addr string) hodeiv1connect.JobServiceClient {
	return hodeiv1connect.NewJobServiceClient(apiClient(addr), "https://"+addr, connect.WithGRPC())
}

// getJob reads a job, or returns nil while the server does not answer.
func getJob(c hodeiv1connect.JobServiceClient, id string) *hodeiv1.Job {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: id}))
	if err != nil {
		return nil
	}
	return r.Msg.Job
}

// pollJob polls GetJob until cond holds (unlike waitJob it survives a
// server restart).
func pollJob(t *testing.T, c hodeiv1connect.JobServiceClient, id string, timeout time.Duration, what string, cond func(*hodeiv1.Job) bool) *hodeiv1.Job {
	t.Helper()
	var j *hodeiv1.Job
	eventually(t, timeout, "job "+id+" "+what, func() bool {
		j = getJob(c, id)
		return j != nil && cond(j)
	})
	return j
}

func isRunning(j *hodeiv1.Job) bool { return j.State == hodeiv1.JobState_JOB_STATE_RUNNING }

// jobLogs reads the stored stdout and stderr of a job through GetJobLogs.
func jobLogs(t *testing.T, c hodeiv1connect.JobServiceClient, id string) (stdout, stderr []byte) {
	t.Helper()
	s, err := c.GetJobLogs(context.Background(), connect.NewRequest(&hodeiv1.GetJobLogsRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for s.Receive() {
		for _, ch := range s.Msg().Chunks {
			switch ch.Stream {
			case hodeiv1.LogStream_LOG_STREAM_STDOUT:
				stdout = append(stdout, ch.Data...)
			default:
				stderr = append(stderr, ch.Data...)
			}
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return stdout, stderr
}

// queryOne runs a single-value query.
func queryOne[T any](t *testing.T, st *store.Store, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := st.SQLForTests().QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// eventTypes lists the types of the events of an aggregate, in order.
func eventTypes(t *testing.T, st *store.Store, aggregateID string) []string {
	t.Helper()
	rows, err := st.SQLForTests().Query(context.Background(), "SELECT type FROM events WHERE aggregate_id = $1 ORDER BY id", aggregateID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func workerState(t *testing.T, st *store.Store, id string) string {
	return queryOne[string](t, st, "SELECT state FROM workers WHERE id = $1", id)
}

// openStore opens the database a test's servers use.
func openStore(t *testing.T, dbURL string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// groupMembers lists the live (non-zombie) processes of process group pgid.
func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// staleReports reads hodei_stale_reports_total from a server's /metrics.
func staleReports(t *testing.T, addr string) float64 {
	t.Helper()
	return metricValue(t, addr, "hodei_stale_reports_total")
}

// metricValue reads an unlabelled series from a server's /metrics.
func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	get := func() (*http.Response, error) { return apiClient(addr).Get("https://" + addr + "/metrics") }
	if a, ok := strings.CutPrefix(addr, "http://"); ok { // an agent's --metrics-listen: cleartext
		get = func() (*http.Response, error) { return http.Get("http://" + a + "/metrics") }
	}
	resp, err := get()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics (%v)", name, sc.Err())
	return 0
}
