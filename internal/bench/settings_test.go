package bench_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/bench"
)

// TestSettingsOutOfRangeAreRefused: every benchmark refuses a setting out
// of its range before it starts anything, naming the setting (as its
// flag) and the bound, and writes no result.
func TestSettingsOutOfRangeAreRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	okThroughput := bench.ThroughputConfig{Jobs: 1, Agents: 1, Slots: 1, Submitters: 1, Batch: 1, Rounds: 1, Modes: []string{"noop"}}
	throughput := func(f func(*bench.ThroughputConfig)) func(*bytes.Buffer) error {
		cfg := okThroughput
		f(&cfg)
		return func(out *bytes.Buffer) error { return bench.Throughput(ctx, out, cfg) }
	}
	okLogs := bench.LogsConfig{Lines: 1, Rate: 1, Steady: time.Second}
	logs := func(f func(*bench.LogsConfig)) func(*bytes.Buffer) error {
		cfg := okLogs
		f(&cfg)
		return func(out *bytes.Buffer) error { return bench.Logs(ctx, out, cfg) }
	}
	okDispatch := bench.DispatchConfig{Jobs: 1, Rate: 1, Agents: 1}
	dispatch := func(f func(*bench.DispatchConfig)) func(*bytes.Buffer) error {
		cfg := okDispatch
		f(&cfg)
		return func(out *bytes.Buffer) error { return bench.Dispatch(ctx, out, cfg) }
	}
	events := func(cfg bench.EventsConfig) func(*bytes.Buffer) error {
		return func(*bytes.Buffer) error { _, err := bench.Events(ctx, cfg, nil); return err }
	}
	for _, c := range []struct {
		run  func(*bytes.Buffer) error
		want string
	}{
		{func(out *bytes.Buffer) error { return bench.Startup(ctx, out, bench.StartupConfig{}) }, "bench startup: runs: 0 is less than 1"},
		{func(out *bytes.Buffer) error { return bench.Provision(ctx, out, bench.ProvisionConfig{Runs: -1}) }, "bench provision: runs: -1 is less than 1"},
		{dispatch(func(c *bench.DispatchConfig) { c.Jobs = 0 }), "bench dispatch: jobs: 0 is less than 1"},
		{dispatch(func(c *bench.DispatchConfig) { c.Rate = 0 }), "bench dispatch: rate: 0 is less than 1"},
		{dispatch(func(c *bench.DispatchConfig) { c.Agents = 0 }), "bench dispatch: agents: 0 is less than 1"},
		{dispatch(func(c *bench.DispatchConfig) { c.Backlog = -5 }), "bench dispatch: backlog: -5 is less than 0"},
		{throughput(func(c *bench.ThroughputConfig) { c.Rounds = 0 }), "bench throughput: rounds: 0 is less than 1"},
		{throughput(func(c *bench.ThroughputConfig) { c.Batch = 1001 }), "bench throughput: batch: 1001 is more than 1000"},
		{throughput(func(c *bench.ThroughputConfig) { c.Slots = 0 }), "bench throughput: slots: 0 is less than 1"},
		{throughput(func(c *bench.ThroughputConfig) { c.Prefetch = -1 }), "bench throughput: prefetch: -1 is less than 0"},
		{throughput(func(c *bench.ThroughputConfig) { c.Modes = []string{"noop", "fast"} }), `bench throughput: modes: "fast" is not a mode (process, noop)`},
		{throughput(func(c *bench.ThroughputConfig) { c.Modes = nil }), "bench throughput: modes: none given (process, noop)"},
		{throughput(func(c *bench.ThroughputConfig) { c.HistoryExpired = true }), "bench throughput: history-expired: needs --history N, the jobs it makes expired"},
		{logs(func(c *bench.LogsConfig) { c.Lines = 0 }), "bench logs: lines: 0 is less than 1"},
		{logs(func(c *bench.LogsConfig) { c.Steady = 500 * time.Millisecond }), "bench logs: steady: 500ms is less than 1s"},
		{logs(func(c *bench.LogsConfig) { c.GiB = -1 }), "bench logs: gib: -1 is negative"},
		{logs(func(c *bench.LogsConfig) { c.Secrets = -1 }), "bench logs: secrets: -1 is less than 0"},
		{events(bench.EventsConfig{Publishers: -2}), "bench events: publishers: -2 is less than 1"},
		{events(bench.EventsConfig{RateDuration: -time.Second}), "bench events: duration: -1s is not positive"},
	} {
		var out bytes.Buffer
		if err := c.run(&out); err == nil || err.Error() != c.want {
			t.Errorf("%v, want %q", err, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("%s: wrote %q", c.want, out.String())
		}
	}
}
