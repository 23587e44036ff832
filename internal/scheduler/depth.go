package scheduler

import (
	"context"
	"log/slog"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store"
)

// jobEvents are the events that can change how many jobs wait.
var jobEvents = []string{"JobCreated", "JobAssigned", "JobStarted", "JobCompleted", "JobFailed", "JobCancelled", "JobRetryScheduled", "JobRetryExhausted"}

// countShare bounds the share of its time the queue-depth duty spends
// counting: with a deep queue a count reads every waiting job (about
// 0.4 s for a million, a parallel scan that takes both cores of a small
// machine), and each count in progress shows in dispatch latency at the
// 99th percentile; at a hundredth it is a count every ~40 s at a million.
const countShare = 100

// countPause is how long the queue-depth duty waits, after a count that
// lasted took, before it may count again: the debounce interval, or longer
// when counts are slow, so that counting takes at most about 1/countShare
// of the duty's time.
func countPause(debounce, took time.Duration) time.Duration {
	return max(debounce, countShare*took)
}

// QueueDepth returns the leader duty that publishes JobQueueDepthChanged
// when the number of queued or retrying jobs changes, at most once per
// debounce interval (longer when counting is slow: countPause), and keeps the hodei_jobs gauges and the retry and
// attempts-per-job metrics. It is driven by job
// events; between them it does nothing.
func QueueDepth(st *store.Store, bus *eventbus.Bus, m *Metrics, debounce time.Duration, log *slog.Logger) Duty {
	return func(ctx context.Context) error {
		from, err := bus.Now(ctx)
		if err != nil {
			return err
		}
		dirty := make(chan struct{}, 1)
		mark := func() {
			select {
			case dirty <- struct{}{}:
			default:
			}
		}
		tail := bus.Watch(ctx, from, eventbus.Filter{Types: jobEvents, Lazy: true, Consumer: "queue_depth"}, func(e eventbus.Event) error {
			if err := m.jobEvent(e); err != nil {
				return err
			}
			mark()
			return nil
		})
		mark() // count once at the start of the term
		var last map[string]int64
		for {
			select {
			case err := <-tail:
				return err
			case <-dirty:
			}
			began := time.Now()
			counts, err := st.CountActiveJobs(ctx)
			took := time.Since(began)
			if err != nil {
				if ctx.Err() != nil {
					continue
				}
				log.Warn("queue depth", "err", err)
			} else {
				for _, s := range []string{"queued", "assigned", "running", "retrying"} {
					m.depth(s, counts[s])
				}
				// The first count of a term sets the baseline; changes publish.
				if last == nil {
					last = counts
				} else if counts["queued"] != last["queued"] || counts["retrying"] != last["retrying"] {
					last = counts
					ev := eventbus.New("queue", "jobs", &hodeiv1.JobQueueDepthChanged{Queued: counts["queued"], Retrying: counts["retrying"]})
					if err := st.PublishEvents(ctx, ev); err != nil && ctx.Err() == nil {
						log.Warn("queue depth", "err", err)
					}
				}
			}
			select { // debounce
			case <-ctx.Done():
			case <-time.After(countPause(debounce, took)):
			}
		}
	}
}
