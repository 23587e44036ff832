package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/platform"
)

// StartupConfig configures Startup.
type StartupConfig struct {
	// Runs is the number of repetitions; the median is reported.
	Runs int
	// Binary is the hodei binary the worker runs; default this executable.
	Binary string
}

// Startup measures, per run: embedded PostgreSQL start (initdb
// included) until the server is ready to serve, and then a `true` job
// from SubmitJob's call until the job is final (a worker process is
// provisioned for it, since none exists yet). Durability settings are
// PostgreSQL's defaults (fsync on). It writes a line per run and the
// result line to out.
func Startup(ctx context.Context, out io.Writer, cfg StartupConfig) error {
	if err := cfg.check(); err != nil {
		return err
	}
	var ready, first []time.Duration
	for i := 0; i < cfg.Runs; i++ {
		r, f, err := startupOnce(ctx, cfg.Binary)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "run %d: ready=%s first_job=%s\n", i+1, r.Round(time.Millisecond), f.Round(time.Millisecond))
		ready, first = append(ready, r), append(first, f)
	}
	fmt.Fprintf(out, "result name=startup ready_ms=%.0f first_job_ms=%.1f runs=%d\n", ms(median(ready)), ms(median(first)), cfg.Runs)
	return nil
}

func startupOnce(ctx context.Context, binary string) (ready, firstJob time.Duration, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := platform.NewLogger(io.Discard)
	start := time.Now()
	c, err := pgembed.Start(ctx, pgembed.Config{Logger: log})
	if err != nil {
		return 0, 0, err
	}
	defer c.Stop(context.Background()) //nolint:errcheck
	if err := c.CreateDatabase(ctx, "hodei"); err != nil {
		return 0, 0, err
	}
	tgt, stopPlatform, err := startPlatform(ctx, platform.Config{DatabaseURL: c.URL("hodei"), MaxWorkers: 1, AgentBinary: binary})
	if err != nil {
		return 0, 0, fmt.Errorf("server: %w", err)
	}
	defer stopPlatform()
	ready = time.Since(start)
	jobs := tgt.jobs()
	t0 := time.Now()
	if _, err := runToEnd(ctx, jobs, []string{"true"}, nil); err != nil {
		return 0, 0, fmt.Errorf("first job: %w", err)
	}
	firstJob = time.Since(t0)
	return ready, firstJob, nil
}
