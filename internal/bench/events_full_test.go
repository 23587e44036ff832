//go:build benchevents

package bench_test

import (
	"context"
	"flag"
	"testing"

	"github.com/hodei-dev/hodei/internal/bench"
	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

var eventsBatch = flag.Int("events.batch", 0, "events per transaction of the throughput phase (default 50)")

// TestEventsFull is the events benchmark with its default sizes, on an
// embedded PostgreSQL with its default durability (fsync on):
//
//	go test -tags benchevents -run TestEventsFull -v -timeout 10m ./internal/bench/ [-args -events.batch=1]
func TestEventsFull(t *testing.T) {
	url := eventsDatabase(t, pgembed.Config{})
	res, err := bench.Events(context.Background(), bench.EventsConfig{URL: url, BatchPerTx: *eventsBatch}, storetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Line())
}
