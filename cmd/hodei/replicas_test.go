package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// startAgent runs spawnAgent with slots and a short drain and grace.
func startAgent(t *testing.T, st *store.Store, servers []string, slots int, args ...string) *agentProc {
	t.Helper()
	return spawnAgent(t, st, servers, append([]string{"--slots", fmt.Sprint(slots), "--drain-timeout", "1s", "--grace", "1s"}, args...)...)
}

// TestReplicasSurviveAServerKill: three servers on one database, agents
// spread across them, 2,000 jobs, and one server killed with SIGKILL in
// the middle. Every job succeeds and its command runs exactly once (a
// file per job with one line, and one attempt per job).
func TestReplicasSurviveAServerKill(t *testing.T) {
	t.Parallel()
	jobs := 2000
	if testing.Short() {
		jobs = 300
	}
	dbURL := storetest.URL(t)
	var servers []serverProc
	var addrs []string
	for i := 0; i < 3; i++ {
		p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0")
		servers = append(servers, p)
		addrs = append(addrs, p.addr)
	}
	st, err := store.Open(context.Background(), store.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := 0; i < 6; i++ { // each agent prefers a different server
		rot := append(append([]string{}, addrs[i%3:]...), addrs[:i%3]...)
		startAgent(t, st, rot, 4)
	}

	dir := t.TempDir()
	t.Logf("%s: start", time.Now().Format("15:04:05.000"))
	client := func(addr string) hodeiv1connect.JobServiceClient {
		return hodeiv1connect.NewJobServiceClient(apiClient(addr), "http://"+addr, connect.WithGRPC())
	}
	spec := &hodeiv1.JobSpec{Command: []string{"sh", "-c", "echo $HODEI_ATTEMPT >> " + dir + "/$HODEI_JOB_ID"}}
	var wg sync.WaitGroup
	ids := make(chan string, jobs)
	for w := 0; w < 4; w++ {
		c := client(addrs[1+w%2]) // submit to the servers that stay up
		wg.Go(func() {
			for i := w; i < jobs; i += 4 {
				r, err := c.SubmitJob(context.Background(), connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
				if err != nil {
					t.Error(err)
					return
				}
				ids <- r.Msg.Job.Id
			}
		})
	}
	// Kill server 0 once a fair share of the jobs is done.
	count := func(sql string) int {
		var n int
		if err := st.SQLForTests().QueryRow(context.Background(), sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually(t, 60*time.Second, "a quarter of the jobs done", func() bool { return count("SELECT count(*) FROM jobs WHERE state = 'succeeded'") >= jobs/4 })
	t.Logf("%s: %d jobs succeeded; killing server %s", time.Now().Format("15:04:05.000"), count("SELECT count(*) FROM jobs WHERE state = 'succeeded'"), servers[0].addr)
	if err := servers[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(ids)
	t.Logf("%s: all %d jobs submitted", time.Now().Format("15:04:05.000"), jobs)
	eventually(t, 120*time.Second, "every job finished", func() bool { return count("SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL") == jobs })
	t.Logf("%s: all %d jobs finished", time.Now().Format("15:04:05.000"), jobs)
	if n := count("SELECT count(*) FROM jobs WHERE state = 'succeeded'"); n != jobs {
		t.Errorf("%d of %d jobs succeeded", n, jobs)
	}
	if n := count("SELECT count(*) FROM attempts"); n != jobs {
		t.Errorf("%d attempts for %d jobs, want exactly one each", n, jobs)
	}
	seen := 0
	for id := range ids {
		b, err := os.ReadFile(filepath.Join(dir, id))
		if err != nil {
			t.Errorf("job %s left no side effect: %v", id, err)
			continue
		}
		if string(b) != "1\n" {
			t.Errorf("job %s ran %d times (%q)", id, strings.Count(string(b), "\n"), b)
		}
		seen++
	}
	if seen != jobs {
		t.Errorf("%d jobs submitted, want %d", seen, jobs)
	}
}
