// Package bench holds the benchmarks of `hodei bench`: the event bus, and
// a platform run in this process (startup, dispatch latency, throughput,
// logs, provisioning), each on an embedded PostgreSQL with its default
// durability. Each reports a final "result name=... key=value" line.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
)

// EventsConfig configures Events. Zero values take the defaults.
type EventsConfig struct {
	// URL is the database, fresh and migrated; empty: one on an embedded
	// PostgreSQL with default settings, started for the run.
	URL string
	// Total is the number of events of the throughput phase, published as
	// fast as Publishers can in transactions of BatchPerTx events
	// (defaults 100,000, 4 and 50: a state change publishes a handful of
	// events, and a busy scheduler commits many state changes at once).
	Total, Publishers, BatchPerTx int
	// Rate is the pace of the latency phase, in events per second, one
	// event per transaction, for RateDuration (defaults 1,000/s and 5s).
	Rate         int
	RateDuration time.Duration
	// CatchUp bounds the wait for the subscriber after each phase; events
	// not delivered by then count as lost (default 60s).
	CatchUp time.Duration
}

// EventsResult is the outcome of Events.
type EventsResult struct {
	// DeliveredPerSec is Total over the time from the first publish of
	// the throughput phase to the subscriber's handling of its last event.
	DeliveredPerSec float64
	// P50 and P99 are the latencies of the paced phase, from just before
	// the publishing transaction's commit to the subscriber's handler call.
	P50, P99 time.Duration
	// Lost is Published minus the distinct events delivered.
	Lost int64
	// Published counts the committed events of both phases.
	Published int64
	// Batch is the number of events per transaction of the throughput phase.
	Batch int
}

// Line is the result in the benchmark report format.
func (r EventsResult) Line() string {
	return fmt.Sprintf("result name=events delivered_per_sec=%.0f p50_ms=%.2f p99_ms=%.2f lost=%d batch=%d",
		r.DeliveredPerSec, ms(r.P50), ms(r.P99), r.Lost, r.Batch)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Events measures the event bus: delivered events per second to one
// durable subscriber while publishers publish as fast as they can, then
// publish-to-handler latency at a steady rate, and that nothing is lost.
func Events(ctx context.Context, cfg EventsConfig, log *slog.Logger) (EventsResult, error) {
	cfg.Total = cmp.Or(cfg.Total, 100_000)
	cfg.Publishers = cmp.Or(cfg.Publishers, 4)
	cfg.BatchPerTx = cmp.Or(cfg.BatchPerTx, 50)
	cfg.Rate = cmp.Or(cfg.Rate, 1000)
	cfg.RateDuration = cmp.Or(cfg.RateDuration, 5*time.Second)
	cfg.CatchUp = cmp.Or(cfg.CatchUp, 60*time.Second)
	if err := cfg.check(); err != nil {
		return EventsResult{}, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.URL == "" {
		url, stop, err := benchDatabase(ctx, false)
		if err != nil {
			return EventsResult{}, err
		}
		defer stop()
		cfg.URL = url
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return EventsResult{}, fmt.Errorf("events bench: %w", err)
	}
	pcfg.MaxConns = int32(cfg.Publishers + 4)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return EventsResult{}, fmt.Errorf("events bench: connect: %w", err)
	}
	defer pool.Close()
	var fsync, syncCommit string
	if err := pool.QueryRow(ctx, "SELECT current_setting('fsync'), current_setting('synchronous_commit')").Scan(&fsync, &syncCommit); err != nil {
		return EventsResult{}, fmt.Errorf("events bench: %w", err)
	}
	log.Info("events bench: server", "fsync", fsync, "synchronous_commit", syncCommit)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sink := newSink()
	bus := eventbus.NewBus(pool, eventbus.Config{Logger: log})
	bus.Subscribe(eventbus.SubscriberConfig{Name: "bench"}, sink.handle)
	busDone := make(chan error, 1)
	go func() { busDone <- bus.Run(ctx) }()
	defer func() { cancel(); <-busDone }()

	res := EventsResult{Batch: cfg.BatchPerTx}
	fail := func(err error) (EventsResult, error) { return res, fmt.Errorf("events bench: %w", err) }

	// Throughput.
	log.Info("events bench: throughput phase", "total", cfg.Total, "publishers", cfg.Publishers, "batch", cfg.BatchPerTx)
	start := time.Now()
	ids, err := publishFast(ctx, pool, cfg)
	if err != nil {
		return fail(err)
	}
	res.Published += int64(len(ids))
	published := time.Since(start)
	lastAt, lost := sink.wait(ctx, ids, cfg.CatchUp)
	res.Lost += lost
	res.DeliveredPerSec = float64(len(ids)-int(lost)) / lastAt.Sub(start).Seconds()
	log.Info("events bench: throughput", "published_per_sec", float64(len(ids))/published.Seconds(), "delivered_per_sec", res.DeliveredPerSec, "lost", lost)

	// Latency.
	log.Info("events bench: latency phase", "rate", cfg.Rate, "duration", cfg.RateDuration)
	ids, err = publishPaced(ctx, pool, cfg, sink)
	if err != nil {
		return fail(err)
	}
	res.Published += int64(len(ids))
	_, lost = sink.wait(ctx, ids, cfg.CatchUp)
	res.Lost += lost
	lat := sink.latencies()
	if len(lat) == 0 {
		return fail(errors.New("no latency samples"))
	}
	slices.Sort(lat)
	res.P50, res.P99 = percentile(lat, 50), percentile(lat, 99)
	log.Info("events bench: latency", "samples", len(lat), "p50", res.P50, "p99", res.P99, "max", lat[len(lat)-1], "lost", lost)
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	return res, nil
}

// publishFast publishes cfg.Total events from cfg.Publishers goroutines,
// cfg.BatchPerTx per transaction, and returns the committed ids.
func publishFast(ctx context.Context, pool *pgxpool.Pool, cfg EventsConfig) ([]int64, error) {
	var mu sync.Mutex
	var all []int64
	g, ctx := errgroup.WithContext(ctx)
	for p := range cfg.Publishers {
		share := cfg.Total / cfg.Publishers
		if p < cfg.Total%cfg.Publishers {
			share++
		}
		g.Go(func() error {
			agg := "bench-" + strconv.Itoa(p)
			for done := 0; done < share; {
				n := min(cfg.BatchPerTx, share-done)
				events := make([]eventbus.Event, n)
				for i := range events {
					events[i] = event(agg, done+i)
				}
				var ids []int64
				if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
					ids, err = eventbus.Publish(ctx, tx, events...)
					return err
				}); err != nil {
					return err
				}
				mu.Lock()
				all = append(all, ids...)
				mu.Unlock()
				done += n
			}
			return nil
		})
	}
	err := g.Wait()
	return all, err
}

// publishPaced publishes cfg.Rate events per second for cfg.RateDuration,
// one per transaction, recording each event's time just before its commit
// in the sink. A publisher that falls behind the schedule catches up
// without pausing; its latencies still count from the commit.
func publishPaced(ctx context.Context, pool *pgxpool.Pool, cfg EventsConfig, sink *sink) ([]int64, error) {
	n := int(float64(cfg.Rate) * cfg.RateDuration.Seconds())
	interval := time.Second / time.Duration(cfg.Rate)
	jobs := make(chan int)
	var mu sync.Mutex
	var all []int64
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		start := time.Now()
		for i := range n {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	})
	for p := range cfg.Publishers {
		g.Go(func() error {
			agg := "paced-" + strconv.Itoa(p)
			for i := range jobs {
				tx, err := pool.Begin(ctx)
				if err != nil {
					return err
				}
				ids, err := eventbus.Publish(ctx, tx, event(agg, i))
				if err != nil {
					tx.Rollback(ctx) //nolint:errcheck
					return err
				}
				sink.sent(ids[0], time.Now())
				if err := tx.Commit(ctx); err != nil {
					return err
				}
				mu.Lock()
				all = append(all, ids...)
				mu.Unlock()
			}
			return nil
		})
	}
	err := g.Wait()
	return all, err
}

func event(agg string, seq int) eventbus.Event {
	return eventbus.New("job", agg, &hodeiv1.JobCreated{JobId: agg, Name: strconv.Itoa(seq)})
}

// sink is the benchmark's subscriber: it records which events arrived,
// when the last one did, and the latency of the paced ones.
type sink struct {
	mu        sync.Mutex
	delivered map[int64]bool
	expected  int // events published so far
	lastAt    time.Time
	sentAt    map[int64]time.Time
	lat       []time.Duration
}

func newSink() *sink {
	return &sink{delivered: map[int64]bool{}, sentAt: map[int64]time.Time{}}
}

func (s *sink) handle(_ context.Context, e eventbus.Event) error {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.delivered[e.ID] {
		return nil
	}
	s.delivered[e.ID] = true
	s.lastAt = now
	if t, ok := s.sentAt[e.ID]; ok {
		s.lat = append(s.lat, now.Sub(t))
	}
	return nil
}

func (s *sink) sent(id int64, at time.Time) {
	s.mu.Lock()
	s.sentAt[id] = at
	s.mu.Unlock()
}

// wait waits up to timeout until every id was delivered and returns when
// the last delivery happened and how many ids were not delivered. Only
// published events exist, so it polls the count of distinct deliveries
// (cheap) and checks the ids once at the end.
func (s *sink) wait(ctx context.Context, ids []int64, timeout time.Duration) (lastAt time.Time, missing int64) {
	s.mu.Lock()
	s.expected += len(ids)
	s.mu.Unlock()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		done := len(s.delivered) >= s.expected
		s.mu.Unlock()
		if done || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if !s.delivered[id] {
			missing++
		}
	}
	return s.lastAt, missing
}

func (s *sink) latencies() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lat)
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}
