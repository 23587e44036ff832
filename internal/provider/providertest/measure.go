package providertest

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hodei-dev/hodei/internal/provider"
)

// ProvisionResult is the outcome of MeasureProvision.
type ProvisionResult struct {
	Provider string
	Runs     int
	// P50 and Max are from the provision request (the worker's
	// registration, then Provision) until the agent is connected: its
	// WorkerRegistered event committed and its stream open.
	P50, Max time.Duration
	// CallP50 is the median time Provision itself took to return.
	CallP50 time.Duration
}

// Line is the result in the benchmark report format.
func (r ProvisionResult) Line() string {
	return fmt.Sprintf("result name=provision provider=%s p50_ms=%.1f max_ms=%.1f call_p50_ms=%.1f runs=%d",
		r.Provider, ms(r.P50), ms(r.Max), ms(r.CallP50), r.Runs)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// MeasureProvision provisions runs workers of p one after the other
// (default 10) on plat, timing each from the request until the agent is
// connected, and terminates each before the next (not timed). p's agents
// must dial plat.Addr. Each worker may take up to a minute to connect.
func MeasureProvision(ctx context.Context, p provider.Provider, spec provider.Spec, plat *Platform, runs int) (ProvisionResult, error) {
	if runs <= 0 {
		runs = 10
	}
	total := make([]time.Duration, 0, runs)
	calls := make([]time.Duration, 0, runs)
	for i := 0; i < runs; i++ {
		start := time.Now()
		id, token, err := plat.NewWorker(ctx, p.Name(), spec.Image)
		if err != nil {
			return ProvisionResult{}, err
		}
		call := time.Now()
		h, err := p.Provision(ctx, id, token, spec)
		if err != nil {
			return ProvisionResult{}, fmt.Errorf("provision: %w", err)
		}
		called := time.Since(call)
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		err = plat.WaitConnected(wctx, id)
		cancel()
		took := time.Since(start)
		if terr := p.Terminate(context.WithoutCancel(ctx), h); terr != nil && err == nil {
			err = fmt.Errorf("terminate: %w", terr)
		}
		if err != nil {
			return ProvisionResult{}, err
		}
		total, calls = append(total, took), append(calls, called)
	}
	slices.Sort(total)
	slices.Sort(calls)
	return ProvisionResult{Provider: p.Name(), Runs: runs, P50: total[len(total)/2], Max: total[len(total)-1], CallP50: calls[len(calls)/2]}, nil
}
