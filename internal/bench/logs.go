package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/platform"
)

// LogsConfig configures Logs.
type LogsConfig struct {
	Lines  int           // lines of the as-fast-as-possible job
	Rate   int           // lines per second of the steady job
	Steady time.Duration // length of the steady job
	// GiB, when above 0, adds a job writing this many GiB (1 KiB lines).
	GiB float64
	// Secrets, when above 0, gives both jobs this many secrets (random
	// values they never print): the cost of redacting their output.
	Secrets int
	// Binary is the hodei binary, run as the worker and, with `bench
	// emit`, as the steady and GiB jobs; default this executable.
	Binary string
}

// Logs measures the log pipeline end to end (job process → agent
// batcher → stream → group-committed inserts): one job printing lines as
// fast as it can, then one printing at a steady rate below saturation
// (lost must be 0 there). The server runs in this process, the agent is a
// subprocess, so server_rss_mib (this process's peak RSS) is the server's.
// It writes a line per job and the result line to out.
func Logs(ctx context.Context, out io.Writer, cfg LogsConfig) error {
	if err := cfg.check(); err != nil {
		return err
	}
	self, err := hodeiBinary(cfg.Binary)
	if err != nil {
		return err
	}
	pc := platform.Config{MaxWorkers: 1, AgentBinary: self}
	if cfg.Secrets > 0 {
		dir, err := os.MkdirTemp("", "hodei-bench-key-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		pc.SecretKeyFile, pc.CreateSecretKey = filepath.Join(dir, "secret.key"), true
	}
	url, tgt, stop, err := startBench(ctx, false, pc)
	if err != nil {
		return err
	}
	defer stop()
	jobs := tgt.jobs()
	refs, err := benchSecrets(ctx, tgt, cfg.Secrets)
	if err != nil {
		return err
	}
	// Warm up: the first job provisions the worker.
	if _, err := runToEnd(ctx, jobs, []string{"true"}, nil); err != nil {
		return err
	}
	type run struct {
		name           string
		argv           []string
		want           int64
		lines, dropped int64
		bytes          int64
		truncated      bool
		took           time.Duration
	}
	runs := []*run{
		{name: "fast", argv: []string{"seq", "1", strconv.Itoa(cfg.Lines)}, want: int64(cfg.Lines)},
		{name: "steady", argv: []string{self, "bench", "emit", "--rate", strconv.Itoa(cfg.Rate), "--lines", strconv.Itoa(cfg.Rate * int(cfg.Steady.Seconds()))},
			want: int64(cfg.Rate * int(cfg.Steady.Seconds()))},
	}
	if cfg.GiB > 0 {
		n := int64(cfg.GiB * (1 << 30) / 1024)
		runs = append(runs, &run{name: "gib", argv: []string{self, "bench", "emit", "--lines", strconv.FormatInt(n, 10), "--size", "1024"}, want: n})
	}
	for _, r := range runs {
		start := time.Now()
		j, err := runToEnd(ctx, jobs, r.argv, refs)
		if err != nil {
			return err
		}
		r.took = time.Since(start)
		if err := storedLogs(ctx, url, j.Id, &r.lines, &r.bytes, &r.dropped, &r.truncated); err != nil {
			return err
		}
		lost := r.want - r.lines - r.dropped
		note := ""
		if r.truncated {
			lost, note = 0, " (output past the per-job log cap was discarded after the truncation marker)"
		}
		fmt.Fprintf(out, "%s: %d lines (%.1f MiB) stored in %s, dropped %d, lost %d%s\n", r.name, r.lines, float64(r.bytes)/(1<<20), r.took.Round(time.Millisecond), r.dropped, lost, note)
	}
	fast, paced := runs[0], runs[1]
	fmt.Fprintf(out, "result name=logs lines_per_sec=%.0f mib_per_sec=%.1f lost=%d dropped=%d steady_rate=%d steady_lost=%d steady_dropped=%d server_rss_mib=%.0f secrets=%d\n",
		float64(fast.lines)/fast.took.Seconds(), float64(fast.bytes)/(1<<20)/fast.took.Seconds(), fast.want-fast.lines-fast.dropped, fast.dropped,
		cfg.Rate, paced.want-paced.lines-paced.dropped, paced.dropped, peakRSSMiB(), cfg.Secrets)
	return nil
}

// benchSecrets stores n secrets of random values and returns references
// to them.
func benchSecrets(ctx context.Context, tgt target, n int) ([]*hodeiv1.SecretRef, error) {
	hc, base := tgt.client()
	c := hodeiv1connect.NewSecretServiceClient(hc, base, connect.WithGRPC())
	var refs []*hodeiv1.SecretRef
	for i := range n {
		v := make([]byte, 16)
		rand.Read(v)
		name := fmt.Sprintf("bench-%d", i)
		if _, err := c.SetSecret(ctx, connect.NewRequest(&hodeiv1.SetSecretRequest{Name: name, Value: []byte(hex.EncodeToString(v))})); err != nil {
			return nil, fmt.Errorf("set secret %s: %w", name, err)
		}
		refs = append(refs, &hodeiv1.SecretRef{Name: name})
	}
	return refs, nil
}

// runToEnd submits argv (with secrets) and waits until the job is final.
// A hodei built with coverage (GOCOVERDIR set) passes the directory on to
// the jobs, so that the emitter writes its counters there instead of a
// warning into the output measured.
func runToEnd(ctx context.Context, jobs hodeiv1connect.JobServiceClient, argv []string, secrets []*hodeiv1.SecretRef) (*hodeiv1.Job, error) {
	spec := &hodeiv1.JobSpec{Command: argv, Secrets: secrets}
	if d := os.Getenv("GOCOVERDIR"); d != "" {
		spec.Env = map[string]string{"GOCOVERDIR": d}
	}
	r, err := jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
	if err != nil {
		return nil, err
	}
	w, err := jobs.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: r.Msg.Job.Id}))
	if err != nil {
		return nil, err
	}
	defer w.Close()
	for w.Receive() {
		if j := w.Msg().Job; j.FinishedAt != nil {
			if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
				return nil, fmt.Errorf("job %v ended %s: %s", argv[0], j.State, j.Message)
			}
			return j, nil
		}
	}
	return nil, fmt.Errorf("watch: %w", w.Err())
}

// storedLogs reads what was stored for a job: lines and bytes of output
// (the stored batches) and lines the agent dropped (LogBatchDropped).
func storedLogs(ctx context.Context, url, jobID string, lines, size, dropped *int64, truncated *bool) error {
	s, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.QueryRow(ctx, "SELECT coalesce(sum(lines), 0), coalesce(sum(bytes), 0) FROM job_logs WHERE job_id = $1", jobID).Scan(lines, size); err != nil {
		return err
	}
	if err := s.QueryRow(ctx, "SELECT log_truncated FROM jobs WHERE id = $1", jobID).Scan(truncated); err != nil {
		return err
	}
	rows, err := s.Query(ctx, "SELECT payload FROM events WHERE aggregate_id = $1 AND type = 'LogBatchDropped'", jobID)
	if err != nil {
		return err
	}
	defer rows.Close()
	*dropped = 0
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return err
		}
		var p hodeiv1.EventPayload
		if err := proto.Unmarshal(b, &p); err != nil {
			return err
		}
		*dropped += p.GetLogBatchDropped().GetLines()
	}
	return rows.Err()
}

// peakRSSMiB is this process's peak resident set (VmHWM).
func peakRSSMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
