package autoscale

import (
	"context"
	"fmt"
	"time"

	"github.com/hodei-dev/hodei/internal/eventbus"
)

// Health is the leader duty that checks every provider each
// HealthInterval, records latency and outcome, and marks a provider
// unhealthy after a failed check or after DisconnectLimit unexpected
// worker disconnects within DisconnectWindow; an unhealthy provider is
// re-checked at the same interval until a check succeeds.
func (a *Autoscaler) Health(ctx context.Context) error {
	from, err := a.bus.Now(ctx)
	if err != nil {
		return err
	}
	disconnects := make(chan string, 64)
	tail := a.bus.Watch(ctx, from, eventbus.Filter{Types: []string{"WorkerDisconnected"}, Consumer: "provider_health"}, func(e eventbus.Event) error {
		d := e.Payload.GetWorkerDisconnected()
		// Workers that lost their replica (a server killed with its process
		// workers, say) say nothing about their provider.
		if !d.GetExpected() && !d.GetReplicaLost() && d.GetProvider() != "" {
			select {
			case disconnects <- d.GetProvider():
			case <-ctx.Done():
			}
		}
		return nil
	})
	recent := map[string][]time.Time{}
	tick := time.NewTicker(a.cfg.HealthInterval)
	defer tick.Stop()
	a.checkAll(ctx)
	for {
		select {
		case err := <-tail:
			if err != nil {
				return fmt.Errorf("health monitor: %w", err)
			}
			return nil
		case name := <-disconnects:
			now := time.Now()
			ts := append(recent[name], now)
			for len(ts) > 0 && now.Sub(ts[0]) > a.cfg.DisconnectWindow {
				ts = ts[1:]
			}
			recent[name] = ts
			if len(ts) >= a.cfg.DisconnectLimit {
				a.mark(ctx, name, false, fmt.Sprintf("%d workers disconnected unexpectedly within %s", len(ts), a.cfg.DisconnectWindow))
				recent[name] = nil
			}
		case <-tick.C:
			a.checkAll(ctx)
		}
	}
}

func (a *Autoscaler) checkAll(ctx context.Context) {
	provs, err := a.store.ListProviders(ctx)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("health monitor", "err", err)
		}
		return
	}
	for _, p := range provs {
		impl := a.providers[p.Name]
		if impl == nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, a.cfg.HealthTimeout)
		t0 := time.Now()
		err := impl.Health(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		a.m.healthCheck(p.Name, time.Since(t0), err)
		switch {
		case err != nil && p.Healthy:
			a.mark(ctx, p.Name, false, "health check failed: "+err.Error())
		case err == nil && !p.Healthy:
			a.mark(ctx, p.Name, true, "health check succeeded")
		}
		if !p.Healthy && err != nil {
			a.m.unhealthyFor(p.Name, time.Since(p.UnhealthySince))
		} else if err == nil {
			a.m.unhealthyFor(p.Name, 0)
		}
	}
}

// mark records a health change (and its events) if it is one.
func (a *Autoscaler) mark(ctx context.Context, name string, healthy bool, message string) {
	p, err := a.store.GetProvider(ctx, name)
	if err != nil || p.Healthy == healthy {
		return
	}
	if err := a.store.SetProviderHealth(ctx, name, healthy, message, p.UnhealthySince); err != nil {
		a.log.Warn("record provider health", "provider", name, "err", err)
		return
	}
	if healthy {
		a.log.Info("provider recovered", "provider", name)
	} else {
		a.log.Warn("provider marked unhealthy", "provider", name, "reason", message)
		a.m.unhealthyFor(name, 0)
	}
	a.Kick()
}
