package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
)

// seriesLabels is the label set of every hodei_* metric family. Labels
// carry bounded values only: no job id, no free text (a worker id only
// on the agent series, which exist while the worker is connected).
var seriesLabels = map[string][]string{
	"hodei_jobs_created_total":                   {"type"},
	"hodei_certificate_expiry_timestamp_seconds": {"kind", "subject"},
	"hodei_certificate_rotations_total":          {"kind", "result"},
	"hodei_jobs_completed_total":                 {"outcome", "type"},
	"hodei_job_duration_seconds":                 {"outcome", "type"},
	"hodei_job_queue_wait_seconds":               {"type"},
	"hodei_jobs":                                 {"state"},
	"hodei_job_created_to_assigned_seconds":      nil,
	"hodei_attempt_assigned_to_started_seconds":  nil,
	"hodei_dispatch_passes_total":                {"trigger"},
	"hodei_dispatch_pass_failures_total":         nil,
	"hodei_dispatch_claims_per_pass":             nil,
	"hodei_job_attempts":                         nil,
	"hodei_job_retries_total":                    {"outcome"},
	"hodei_stale_reports_total":                  nil,
	"hodei_log_lines_stored_total":               nil,
	"hodei_workers":                              {"provider", "state"},
	"hodei_rpc_requests_total":                   {"code", "procedure"},
	"hodei_rpc_duration_seconds":                 {"procedure"},
	"hodei_events_published_total":               {"type"},
	"hodei_events_delivered_total":               {"subscriber", "type"},
	"hodei_event_handler_seconds":                {"subscriber"},
	"hodei_event_handler_failures_total":         {"subscriber", "type"},
	"hodei_events_dead_lettered_total":           {"subscriber", "type"},
	"hodei_event_subscriber_lag":                 {"subscriber"},
	"hodei_event_reads_held_back_total":          {"subscriber"},
	"hodei_event_processing_seconds":             {"consumer"},
	"hodei_event_listener_reconnects_total":      nil,
	"hodei_webhook_deliveries_total":             {"outcome", "webhook"},
	"hodei_provider_health_checks_total":         {"provider", "result"},
	"hodei_provider_health_check_seconds":        {"provider"},
	"hodei_provider_unhealthy_seconds":           {"provider"},
	"hodei_workers_provisioned_total":            {"provider", "result"},
	"hodei_provision_seconds":                    {"provider"},
	"hodei_workers_terminated_total":             {"provider"},
	"hodei_agent_reconnects_total":               {"provider", "worker"},
	"hodei_agent_reconnect_seconds":              {"provider", "worker"},
	"hodei_agent_log_lines_total":                {"provider", "worker"},
	"hodei_agent_log_lines_dropped_total":        {"provider", "worker"},
	"hodei_secret_accesses_total":                {"operation"},
	"hodei_log_redactions_total":                 nil,
	"hodei_secret_leaks_blocked_total":           nil,
}

// jobMix runs one job of each ending on c: success (two), a failure, a
// retried job that then succeeds, a cancel and a timeout. It returns
// the job ids.
func jobMix(t *testing.T, c hodeiv1connect.JobServiceClient) []string {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "flaky")
	ids := []string{
		submit(t, c, &hodeiv1.JobSpec{Type: "build", Command: []string{"sh", "-c", "echo built; sleep 0.5"}}),
		submit(t, c, &hodeiv1.JobSpec{Type: "build", Command: []string{"echo", "built again"}}),
		submit(t, c, &hodeiv1.JobSpec{Type: "test", Command: []string{"sh", "-c", "echo failing >&2; exit 3"},
			Retry: &hodeiv1.RetryPolicy{MaxAttempts: 1}}),
		submit(t, c, &hodeiv1.JobSpec{Type: "flaky", Command: []string{"sh", "-c", "[ -e " + marker + " ] && exit 0; touch " + marker + "; exit 7"},
			Retry: &hodeiv1.RetryPolicy{MaxAttempts: 2, RetryableExitCodes: []int32{7}, InitialBackoff: durationpb.New(10 * time.Millisecond)}}),
		submit(t, c, &hodeiv1.JobSpec{Type: "slow", Command: []string{"sleep", "30"}, Timeout: durationpb.New(500 * time.Millisecond)}),
	}
	long := submit(t, c, &hodeiv1.JobSpec{Type: "long", Command: []string{"sleep", "60"}})
	pollJob(t, c, long, 30*time.Second, "running", isRunning)
	if _, err := c.CancelJob(context.Background(), connect.NewRequest(&hodeiv1.CancelJobRequest{Id: long})); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, long)
	want := []hodeiv1.JobState{hodeiv1.JobState_JOB_STATE_SUCCEEDED, hodeiv1.JobState_JOB_STATE_SUCCEEDED, hodeiv1.JobState_JOB_STATE_FAILED,
		hodeiv1.JobState_JOB_STATE_SUCCEEDED, hodeiv1.JobState_JOB_STATE_TIMED_OUT, hodeiv1.JobState_JOB_STATE_CANCELLED}
	var got []hodeiv1.JobState
	for _, id := range ids {
		got = append(got, pollJob(t, c, id, 60*time.Second, "final", isFinal).State)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("job states (-want +got):\n%s", diff)
	}
	return ids
}

// scrape reads and parses a server's /metrics.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := apiClient(addr).Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// TestObservability runs hodei dev through a mix of jobs, checks the
// label sets and values of every hodei_* series on its /metrics, then
// points a real Prometheus at it and evaluates every dashboard query and
// alert expression through Prometheus's HTTP API.
func TestObservability(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	dev := spawnPlatform(t, []string{"HODEI_LOG_FORMAT=json", "HODEI_LOG_LEVEL=debug"}, "dev", "--listen", addr, "--data-dir", filepath.Join(searchableDir(t), "pg"), "--max-workers", "2")
	dev.waitLog(t, 60*time.Second, "Hodei is running on "+addr)
	ids := jobMix(t, jobClient(addr))

	var mfs map[string]*dto.MetricFamily
	// The leader counts endings from events, and agents send their
	// counters with heartbeats (every 2 s).
	eventually(t, 20*time.Second, "completions of every outcome and agent counters", func() bool {
		mfs = scrape(t, addr)
		return len(mfs["hodei_jobs_completed_total"].GetMetric()) == 5 && sum(mfs["hodei_agent_log_lines_total"]) >= 3
	})
	t.Run("labels", func(t *testing.T) { checkLabels(t, mfs, ids) })
	t.Run("values", func(t *testing.T) { checkValues(t, mfs) })
	t.Run("logs", func(t *testing.T) { checkJobLogLines(t, dev.logs.String(), ids[len(ids)-1]) })
	t.Run("prometheus", func(t *testing.T) { checkPrometheus(t, addr) })
}

func checkLabels(t *testing.T, mfs map[string]*dto.MetricFamily, jobIDs []string) {
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "hodei_") {
			continue
		}
		want, known := seriesLabels[name]
		if !known {
			t.Errorf("%s is not in seriesLabels: add it with its labels (and to docs/metrics.md)", name)
			continue
		}
		for _, m := range mf.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName())
				if slices.Contains(jobIDs, l.GetValue()) {
					t.Errorf("%s label %s carries a job id", name, l.GetName())
				}
				if l.GetName() != "worker" && uuidRe.MatchString(l.GetValue()) {
					t.Errorf("%s label %s=%q carries an id", name, l.GetName(), l.GetValue())
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s labels %v, want %v", name, got, want)
			}
		}
	}
}

var uuidRe = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// sum adds the values of a counter family's series.
func sum(mf *dto.MetricFamily) float64 {
	var n float64
	for _, m := range mf.GetMetric() {
		n += m.GetCounter().GetValue()
	}
	return n
}

// series returns the metric of mf whose labels include want.
func series(mf *dto.MetricFamily, want map[string]string) *dto.Metric {
	for _, m := range mf.GetMetric() {
		n := 0
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
				n++
			}
		}
		if n == len(want) {
			return m
		}
	}
	return nil
}

func checkValues(t *testing.T, mfs map[string]*dto.MetricFamily) {
	completed := map[string]float64{}
	for _, m := range mfs["hodei_jobs_completed_total"].GetMetric() {
		var typ, outcome string
		for _, l := range m.GetLabel() {
			if l.GetName() == "type" {
				typ = l.GetValue()
			} else {
				outcome = l.GetValue()
			}
		}
		completed[typ+"/"+outcome] = m.GetCounter().GetValue()
	}
	want := map[string]float64{"build/succeeded": 2, "test/failed": 1, "flaky/succeeded": 1, "slow/timed_out": 1, "long/cancelled": 1}
	if diff := cmp.Diff(want, completed); diff != "" {
		t.Errorf("hodei_jobs_completed_total by type/outcome (-want +got):\n%s", diff)
	}
	// The first build job sleeps 0.5 s; its duration, from the start report
	// to the result on the server's clock, is close to that.
	if h := series(mfs["hodei_job_duration_seconds"], map[string]string{"type": "build", "outcome": "succeeded"}).GetHistogram(); h.GetSampleCount() != 2 || h.GetSampleSum() < 0.4 {
		t.Errorf("build job durations: count %d sum %g, want 2 and >= 0.4 s", h.GetSampleCount(), h.GetSampleSum())
	}
	// The flaky job waited twice (its retry too).
	if h := series(mfs["hodei_job_queue_wait_seconds"], map[string]string{"type": "flaky"}).GetHistogram(); h.GetSampleCount() != 2 {
		t.Errorf("flaky job queue waits: %d, want 2", h.GetSampleCount())
	}
	if g := series(mfs["hodei_workers"], map[string]string{"provider": "process", "state": "connected"}).GetGauge(); g.GetValue() < 1 {
		t.Errorf("hodei_workers{provider=process,state=connected} = %v, want >= 1", g.GetValue())
	}
	if m := series(mfs["hodei_rpc_requests_total"], map[string]string{"procedure": hodeiv1connect.JobServiceSubmitJobProcedure, "code": "ok"}); m.GetCounter().GetValue() < 6 {
		t.Errorf("SubmitJob calls counted: %v, want >= 6", m.GetCounter().GetValue())
	}
	if m := series(mfs["hodei_rpc_requests_total"], map[string]string{"procedure": hodeiv1connect.WorkerServiceConnectProcedure, "code": "ok"}); m.GetCounter().GetValue() < 6 {
		t.Errorf("worker stream messages counted: %v, want >= 6", m.GetCounter().GetValue())
	}
	if lines := sum(mfs["hodei_agent_log_lines_total"]); lines < 3 {
		t.Errorf("agents report %v log lines read, want >= 3", lines)
	}
	for _, consumer := range []string{"dispatcher", "queue_depth", "log_followers", "autoscaler"} {
		if series(mfs["hodei_event_processing_seconds"], map[string]string{"consumer": consumer}).GetHistogram().GetSampleCount() == 0 {
			t.Errorf("no event processing latency for %s", consumer)
		}
	}
}

// checkJobLogLines: the server's JSON lines tell the story of the
// cancelled job id by its job_id, with the attempt and worker where they
// apply.
func checkJobLogLines(t *testing.T, logs, id string) {
	var story []string
	for _, line := range strings.Split(logs, "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) != nil || l["job_id"] != id {
			continue
		}
		msg := fmt.Sprint(l["msg"])
		if msg == "job assigned" || msg == "job cancelled" {
			if l["attempt"] != float64(1) || !uuidRe.MatchString(fmt.Sprint(l["worker_id"])) {
				t.Errorf("%q line without attempt 1 and a worker_id: %s", msg, line)
			}
		}
		story = append(story, msg)
	}
	for _, want := range []string{"job created", "job assigned", "job cancelled", "attempt result"} {
		if !slices.Contains(story, want) {
			t.Errorf("no %q line with job_id %s; its lines: %q", want, id, story)
		}
	}
}

// panelQueries reads the PromQL of every panel of a dashboard file, with
// Grafana's interval variable replaced.
func panelQueries(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Type    string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string][]string{}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		for _, tg := range p.Targets {
			out[p.Title] = append(out[p.Title], strings.ReplaceAll(tg.Expr, "$__rate_interval", "1m"))
		}
		if len(out[p.Title]) == 0 {
			t.Errorf("%s: panel %q has no query", path, p.Title)
		}
	}
	return out
}

// alertExprs reads the expression of every rule of the alert file.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The file is YAML; expressions are one line or a literal block.
	out := map[string]string{}
	re := regexp.MustCompile(`(?m)^\s+- alert: (\w+)\n\s+expr: (?:\|\n((?:\s{10,}.*\n)+)|(.*)\n)`)
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = strings.TrimSpace(m[2] + m[3])
	}
	return out
}

func checkPrometheus(t *testing.T, target string) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("no prometheus binary (make deps installs it)")
	}
	dir := t.TempDir()
	rules, err := filepath.Abs("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [%q]\nscrape_configs:\n  - job_name: hodei\n    scheme: https\n    tls_config: {ca_file: %q}\n    authorization: {credentials: %q}\n    static_configs:\n      - targets: [%q]\n", rules, os.Getenv("HODEI_CA_FILE"), tokenFor(target), target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	web := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	query := func(q string) (int, error) { return promQuery(web, q) }
	// Rates need two scrapes of the completed jobs.
	eventually(t, 60*time.Second, "Prometheus scraped hodei twice", func() bool {
		n, err := query(`count_over_time(hodei_jobs_completed_total{outcome="cancelled"}[1m]) >= 3`)
		return err == nil && n > 0
	})
	for _, f := range []string{"overview", "workers", "events", "api", "security"} {
		for title, qs := range panelQueries(t, "../../deploy/grafana/"+f+".json") {
			for _, q := range qs {
				n, err := query(q)
				switch {
				case err != nil:
					t.Errorf("%s dashboard, panel %q: %s: %v", f, title, q, err)
				case n == 0 && f == "overview":
					t.Errorf("overview dashboard, panel %q: %s returns no data", title, q)
				}
			}
		}
	}
	exprs := alertExprs(t)
	if len(exprs) < 10 {
		t.Fatalf("read %d alert expressions from alerts.yml, want every rule (10)", len(exprs))
	}
	for name, q := range exprs {
		if _, err := query(q); err != nil {
			t.Errorf("alert %s: %s: %v", name, q, err)
		}
	}
}

// promQuery runs an instant query through Prometheus's HTTP API and
// returns how many series it returned.
func promQuery(addr, q string) (int, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Error  string
		Data   struct{ Result []json.RawMessage }
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("%s: %s", r.Status, r.Error)
	}
	return len(r.Data.Result), nil
}
