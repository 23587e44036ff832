package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/bench/cpu"
)

// DispatchConfig configures Dispatch.
type DispatchConfig struct {
	Jobs   int // jobs to submit
	Rate   int // jobs per second
	Agents int // idle agents
	// Plaintext runs the platform without TLS (--insecure-plaintext),
	// for comparison.
	Plaintext bool
	// Backlog jobs wait, submitted before the measurement, for a label
	// no worker has.
	Backlog int
	// History finished jobs (with log rows and events) are loaded into
	// the database before the platform starts (loadHistory).
	History int
	// PGStats prints to stderr the CPU used and the costliest statements
	// of the measured part (after the backlog), as Throughput's does.
	PGStats bool
	// Retries retries each job once through RetryJob when it has run
	// (a JobRetryScheduled per job), and measures the retries' latency
	// apart: from RetryJob's return to the agent receiving the retry.
	Retries bool
}

// Dispatch measures dispatch latency: idle agents are connected, jobs
// are submitted one at a time at a steady rate, and the latency runs from
// SubmitJob's return to the agent receiving RunJob. It writes the result
// line to out.
func Dispatch(ctx context.Context, out io.Writer, cfg DispatchConfig) error {
	if err := cfg.check(); err != nil {
		return err
	}
	var mu sync.Mutex
	returned, received := map[string]time.Time{}, map[string]time.Time{}
	retried, retryReceived := map[string]time.Time{}, map[string]time.Time{}
	all := make(chan struct{}) // closed when every job (and retry) has reached an agent
	// complete closes all once every record is in; called with mu held.
	// A retry may reach its agent before RetryJob has returned to us, so
	// both the agent's side and RetryJob's return can be the last record.
	closed := false
	complete := func() {
		if !closed && len(received) == cfg.Jobs && (!cfg.Retries || len(retryReceived) == cfg.Jobs && len(retried) == cfg.Jobs) {
			closed = true
			close(all)
		}
	}
	var rig *benchRig
	onRun := func(id string) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if _, again := received[id]; again {
			retryReceived[id] = now
		} else {
			received[id] = now
			if cfg.Retries {
				go retryOnce(ctx, rig, id, func(at time.Time) { mu.Lock(); defer mu.Unlock(); retried[id] = at; complete() })
			}
		}
		complete()
	}
	rc := rigConfig{agents: cfg.Agents, slots: 4, noop: true, onRun: onRun, plaintext: cfg.Plaintext, pgStats: cfg.PGStats}
	if cfg.History > 0 {
		rc.prepare = func(ctx context.Context, url string) error {
			return loadHistory(ctx, url, cfg.History, false, os.Stderr)
		}
	}
	rig, err := newBenchRig(ctx, rc)
	if err != nil {
		return err
	}
	defer rig.stop()
	if err := submitBacklog(ctx, rig, cfg.Backlog); err != nil {
		return err
	}
	if cfg.PGStats {
		if _, err := rig.db.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
			return err
		}
	}
	cpuStart, start := cpu.Now(), time.Now()
	spec := &hodeiv1.JobSpec{Command: []string{"true"}}
	tick := time.NewTicker(time.Second / time.Duration(cfg.Rate))
	defer tick.Stop()
	for i := 0; i < cfg.Jobs; i++ {
		<-tick.C
		r, err := rig.jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
		if err != nil {
			return err
		}
		now := time.Now()
		mu.Lock()
		returned[r.Msg.Job.Id] = now
		mu.Unlock()
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
	}
	if cfg.PGStats {
		printPGStats(ctx, rig, cpuStart, time.Since(start), cfg.Jobs)
	}
	mu.Lock()
	defer mu.Unlock()
	lat := latencies(returned, received)
	if len(lat) < cfg.Jobs {
		return fmt.Errorf("only %d of %d jobs reached an agent", len(lat), cfg.Jobs)
	}
	line := fmt.Sprintf("result name=dispatch p50_ms=%.2f p99_ms=%.2f max_ms=%.2f jobs=%d rate=%d backlog=%d history=%d", ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]), ms(lat[len(lat)-1]), len(lat), cfg.Rate, cfg.Backlog, cfg.History)
	if cfg.Retries {
		rl := latencies(retried, retryReceived)
		if len(rl) < cfg.Jobs {
			return fmt.Errorf("only %d of %d retries reached an agent", len(rl), cfg.Jobs)
		}
		line += fmt.Sprintf(" retries=%d retry_p50_ms=%.2f retry_p99_ms=%.2f retry_max_ms=%.2f", len(rl), ms(rl[len(rl)/2]), ms(rl[len(rl)*99/100]), ms(rl[len(rl)-1]))
	}
	fmt.Fprintf(out, "%s rss_mib=%.0f\n", line, selfRSSMiB())
	return nil
}

// latencies lists, sorted, the time from from[id] to to[id] of each id in
// both.
func latencies(from, to map[string]time.Time) []time.Duration {
	var lat []time.Duration
	for id, t0 := range from {
		if t1, ok := to[id]; ok {
			lat = append(lat, max(t1.Sub(t0), 0))
		}
	}
	slices.Sort(lat)
	return lat
}

// retryOnce retries job id through RetryJob once it has ended (its agent
// has just received it), and calls done with the time RetryJob returned.
func retryOnce(ctx context.Context, rig *benchRig, id string, done func(time.Time)) {
	for ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if _, err := rig.jobs.RetryJob(ctx, connect.NewRequest(&hodeiv1.RetryJobRequest{Id: id})); err == nil {
			done(time.Now())
			return
		}
	}
}

// submitBacklog submits n jobs that wait for a label no worker has, 1,000
// per call on 4 connections, and waits until the platform is quiet again.
func submitBacklog(ctx context.Context, rig *benchRig, n int) error {
	if n <= 0 {
		return nil
	}
	start := time.Now()
	spec := &hodeiv1.JobSpec{Command: []string{"true"}, Labels: map[string]string{"bench-backlog": "no-worker-has-it"}}
	if err := submitAll(ctx, rig.jobs, spec, n, 1000, 4); err != nil {
		return fmt.Errorf("backlog: %w", err)
	}
	fmt.Fprintf(os.Stderr, "backlog: %d jobs waiting (submitted in %.0fs)\n", n, time.Since(start).Seconds())
	// Let the dispatcher and the autoscaler finish their reaction to the
	// submission before the measurement starts.
	time.Sleep(2 * time.Second)
	return nil
}
