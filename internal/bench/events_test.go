package bench_test

import (
	"context"
	"log/slog"
	"regexp"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/bench"
	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestEvents runs a small events benchmark on a throwaway cluster. The
// real run is `hodei bench events`.
func TestEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	url := eventsDatabase(t, storetest.TestConfig())
	res, err := bench.Events(context.Background(), bench.EventsConfig{
		URL: url, Total: 5000, Rate: 500, RateDuration: time.Second, CatchUp: 30 * time.Second,
	}, storetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Line())
	if res.Published != 5500 || res.Lost != 0 || res.Batch != 50 || res.DeliveredPerSec <= 0 || res.P50 <= 0 || res.P99 < res.P50 {
		t.Errorf("result %+v", res)
	}
	re := regexp.MustCompile(`^result name=events delivered_per_sec=\d+ p50_ms=\d+\.\d\d p99_ms=\d+\.\d\d lost=0 batch=50$`)
	if !re.MatchString(res.Line()) {
		t.Errorf("line %q does not match %v", res.Line(), re)
	}
}

// eventsDatabase starts a private cluster with cfg and returns the URL of
// a migrated database on it.
func eventsDatabase(t *testing.T, cfg pgembed.Config) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgembed.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	if err := c.CreateDatabase(ctx, "bench"); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(ctx, store.Config{URL: c.URL("bench"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return c.URL("bench")
}
