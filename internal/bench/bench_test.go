package bench_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/bench"
	"github.com/hodei-dev/hodei/internal/provider/kubernetes/kubetest"
	"github.com/hodei-dev/hodei/internal/testbin"
)

// hodeiBin is the hodei binary the benches run as workers and jobs.
var hodeiBin string

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, &hodeiBin, (*testing.M).Run)) }

// checkLines fails unless out has exactly one line per pattern, each
// matching its pattern in order.
func checkLines(t *testing.T, out string, patterns ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(patterns) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(patterns), out)
	}
	for i, p := range patterns {
		if !regexp.MustCompile("^" + p + "$").MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %q", i+1, lines[i], p)
		}
	}
}

// The benches below run small versions of `hodei bench ...` and check
// their report lines, which scripts and the docs read.

func TestStartup(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	t.Parallel()
	var out bytes.Buffer
	if err := bench.Startup(context.Background(), &out, bench.StartupConfig{Runs: 1, Binary: hodeiBin}); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out.String(),
		`run 1: ready=\S+s first_job=\S+s`,
		`result name=startup ready_ms=\d+ first_job_ms=\d+\.\d runs=1`)
}

func TestDispatch(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	t.Parallel()
	var out bytes.Buffer
	if err := bench.Dispatch(context.Background(), &out, bench.DispatchConfig{Jobs: 20, Rate: 200, Agents: 2}); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out.String(), `result name=dispatch p50_ms=\d+\.\d\d p99_ms=\d+\.\d\d max_ms=\d+\.\d\d jobs=20 rate=200 backlog=0 history=0 rss_mib=\d+`)
}

func TestThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	t.Parallel()
	var out bytes.Buffer
	cfg := bench.ThroughputConfig{Jobs: 300, Agents: 2, Slots: 4, Prefetch: 128, AdaptivePrefetch: true, Submitters: 2, Batch: 100,
		Modes: []string{"noop", "process"}, Rounds: 1}
	if err := bench.Throughput(context.Background(), &out, cfg); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out.String(),
		`result name=throughput mode=process jobs_per_sec=\d+ fork_exec_per_sec=\d+ ratio=\d+\.\d\d jobs=300 agents=2 slots=4 prefetch=auto batch=100 presubmit=false tenth_min_ratio=\d+\.\d\d tenths=[\d/]+ history=0 rss_mib=\d+ tables_mib=\d+ indexes_mib=\d+ list_ms=\d+\.\d list_failed_ms=\d+\.\d job_page_ms=\d+\.\d`,
		`result name=throughput mode=noop jobs_per_sec=\d+ jobs=300 agents=2 slots=4 prefetch=auto batch=100 presubmit=false tenth_min_ratio=\d+\.\d\d tenths=[\d/]+ history=0 rss_mib=\d+ tables_mib=\d+ indexes_mib=\d+ list_ms=\d+\.\d list_failed_ms=\d+\.\d job_page_ms=\d+\.\d`)
}

// TestThroughputRounds: several rounds report the median with the
// range; a fixed prefetch is printed as its number; the CPU and
// allocation profiles asked for are written.
func TestThroughputRounds(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	t.Parallel()
	var out bytes.Buffer
	dir := t.TempDir()
	cfg := bench.ThroughputConfig{Jobs: 200, Agents: 1, Slots: 2, Prefetch: 3, Submitters: 1, Batch: 1,
		Modes: []string{"noop"}, Rounds: 2, Presubmit: true, CPUProfile: filepath.Join(dir, "cpu.pprof"), MemProfile: filepath.Join(dir, "mem.pprof")}
	if err := bench.Throughput(context.Background(), &out, cfg); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out.String(),
		`result name=throughput mode=noop jobs_per_sec=\d+ jobs_per_sec_min=\d+ jobs_per_sec_max=\d+ rounds=2 jobs=200 agents=1 slots=2 prefetch=3 batch=1 presubmit=true tenth_min_ratio=\d+\.\d\d tenths=[\d/]+ history=0 rss_mib=\d+ tables_mib=\d+ indexes_mib=\d+ list_ms=\d+\.\d list_failed_ms=\d+\.\d job_page_ms=\d+\.\d`)
	for _, f := range []string{cfg.CPUProfile, cfg.MemProfile} {
		// A profile is gzipped protobuf.
		if b, err := os.ReadFile(f); err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("profile %s: %d bytes, %v; want a gzipped profile", filepath.Base(f), len(b), err)
		}
	}
}

func TestLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	t.Parallel()
	for _, secrets := range []int{0, 2} {
		var out bytes.Buffer
		if err := bench.Logs(context.Background(), &out, bench.LogsConfig{Lines: 5000, Rate: 2000, Steady: time.Second, Binary: hodeiBin, Secrets: secrets}); err != nil {
			t.Fatal(err)
		}
		checkLines(t, out.String(),
			`fast: 5000 lines \(\d+\.\d MiB\) stored in \S+s, dropped 0, lost 0`,
			`steady: 2000 lines \(\d+\.\d MiB\) stored in \S+s, dropped 0, lost 0`,
			fmt.Sprintf(`result name=logs lines_per_sec=\d+ mib_per_sec=\d+\.\d lost=0 dropped=0 steady_rate=2000 steady_lost=0 steady_dropped=0 server_rss_mib=\d+ secrets=%d`, secrets))
	}
}

// TestProvision covers the Docker provider too when an engine is
// reachable (it needs `make images`).
func TestProvision(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	t.Parallel()
	var out bytes.Buffer
	if err := bench.Provision(context.Background(), &out, bench.ProvisionConfig{Runs: 2, DockerImage: "hodei-worker:dev", Binary: hodeiBin}); err != nil {
		t.Fatal(err)
	}
	want := []string{`process: p50 \S+s`}
	dockerField, k8sField := "docker_p50_ms=skipped", "k8s_p50_ms=skipped"
	if exec.Command("docker", "version").Run() == nil {
		want = append(want, `docker: p50 \S+s`)
		dockerField = `docker_p50_ms=\d+\.\d`
	} else {
		t.Log("no Docker engine: the Docker provider was not measured")
	}
	if _, err := kubetest.BinDir(); err == nil {
		want = append(want, `kubernetes: p50 \S+s \(kube-apiserver v\S+, test node\)`)
		k8sField = `k8s_p50_ms=\d+\.\d`
	} else {
		want = append(want, `kubernetes: skipped: .*`)
		t.Logf("the Kubernetes provider was not measured: %v", err)
	}
	want = append(want, `result name=provision process_p50_ms=\d+\.\d `+dockerField+` `+k8sField+` runs=2`)
	checkLines(t, out.String(), want...)
}

func TestEmit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  bench.EmitConfig
		want string
	}{
		{"plain", bench.EmitConfig{Lines: 3}, "line 1\nline 2\nline 3\n"},
		{"padded", bench.EmitConfig{Lines: 2, Size: 10}, "line 1xxx\nline 2xxx\n"},
		{"shorter than a line", bench.EmitConfig{Lines: 1, Size: 3}, "line 1\n"},
	} {
		var out bytes.Buffer
		if err := bench.Emit(&out, tc.cfg); err != nil {
			t.Fatal(err)
		}
		if out.String() != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, out.String(), tc.want)
		}
	}
}

// TestEmitPaced: a paced run takes about lines/rate seconds.
func TestEmitPaced(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	start := time.Now()
	if err := bench.Emit(&out, bench.EmitConfig{Lines: 500, Rate: 1000}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if n := strings.Count(out.String(), "\n"); n != 500 {
		t.Errorf("%d lines, want 500", n)
	}
	if took < 490*time.Millisecond {
		t.Errorf("500 lines at 1000/s took %s, want about 500ms", took)
	}
}

// TestThroughputHistoryAndHeldSnapshot: a history is loaded before each
// run (its jobs are in the database but not in the run's figures), and
// a held snapshot makes each round run twice and report the ratio.
func TestThroughputHistoryAndHeldSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	t.Parallel()
	var out bytes.Buffer
	cfg := bench.ThroughputConfig{Jobs: 200, Agents: 1, Slots: 4, Prefetch: 8, Submitters: 1, Batch: 100,
		Modes: []string{"noop"}, Rounds: 1, Presubmit: true, History: 3000, HoldSnapshot: true}
	if err := bench.Throughput(context.Background(), &out, cfg); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out.String(),
		`result name=throughput mode=noop jobs_per_sec=\d+ jobs=200 agents=1 slots=4 prefetch=8 batch=100 presubmit=true`+
			` tenth_min_ratio=\d+\.\d\d tenths=[\d/]+ history=3000 rss_mib=\d+ tables_mib=\d+ indexes_mib=\d+ list_ms=\d+\.\d list_failed_ms=\d+\.\d job_page_ms=\d+\.\d`+
			` held_jobs_per_sec=\d+ held_ratio=\d+\.\d\d held_tenth_min_ratio=\d+\.\d\d`)
}

// TestThroughputWithAnExpiredHistory: a history older than the job
// retention is deleted by the retention duty while the run goes on, and
// the result line tells how much of it was gone at the end.
func TestThroughputWithAnExpiredHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	t.Parallel()
	var out bytes.Buffer
	cfg := bench.ThroughputConfig{Jobs: 200, Agents: 1, Slots: 4, Prefetch: 8, Submitters: 1, Batch: 100,
		Modes: []string{"noop"}, Rounds: 1, Presubmit: true, History: 3000, HistoryExpired: true}
	if err := bench.Throughput(context.Background(), &out, cfg); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out.String(),
		`result name=throughput mode=noop jobs_per_sec=\d+ jobs=200 .* history=3000 .* history_expired=true history_deleted=([1-9]\d{0,2}|[12]\d{3}|3000)`)
}

// TestDispatchBehindABacklog: dispatch is measured with jobs waiting for
// a label no worker has, over a history of finished jobs, and every
// measured job still reaches an agent; with Retries, so does its retry.
func TestDispatchBehindABacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	t.Parallel()
	var out bytes.Buffer
	if err := bench.Dispatch(context.Background(), &out, bench.DispatchConfig{Jobs: 20, Rate: 200, Agents: 2, Backlog: 2000, History: 1000}); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out.String(), `result name=dispatch p50_ms=\d+\.\d\d p99_ms=\d+\.\d\d max_ms=\d+\.\d\d jobs=20 rate=200 backlog=2000 history=1000 rss_mib=\d+`)
	out.Reset()
	if err := bench.Dispatch(context.Background(), &out, bench.DispatchConfig{Jobs: 20, Rate: 200, Agents: 2, Backlog: 2000, Retries: true}); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out.String(), `result name=dispatch p50_ms=\d+\.\d\d p99_ms=\d+\.\d\d max_ms=\d+\.\d\d jobs=20 rate=200 backlog=2000 history=0 retries=20 retry_p50_ms=\d+\.\d\d retry_p99_ms=\d+\.\d\d retry_max_ms=\d+\.\d\d rss_mib=\d+`)
}
