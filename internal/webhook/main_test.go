package webhook_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
	"github.com/hodei-dev/hodei/internal/webhook"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// platform is a store, a running bus and the metrics registry of a test.
type platform struct {
	st  *store.Store
	bus *eventbus.Bus
	reg *prometheus.Registry
	wm  *webhook.Metrics
}

// newPlatform runs a bus on a fresh database until the test ends. The
// safety poll is off: delivery must come from notifications.
func newPlatform(t *testing.T) *platform {
	t.Helper()
	st := storetest.Open(t)
	reg := prometheus.NewRegistry()
	bus := st.NewBus(eventbus.Config{Logger: storetest.Logger(t), SafetyPoll: -1, Metrics: eventbus.NewMetrics(reg),
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bus.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bus: %v", err)
		}
	})
	return &platform{st: st, bus: bus, reg: reg, wm: webhook.NewMetrics(reg)}
}

// config is the managers' configuration in tests: quick retries.
func (p *platform) config(t *testing.T) webhook.Config {
	return webhook.Config{Logger: storetest.Logger(t), Metrics: p.wm, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
}

// runManager runs a manager until the returned stop is called or the test
// ends.
func (p *platform) runManager(t *testing.T, cfg webhook.Config) (stop func()) {
	t.Helper()
	m := webhook.New(cfg, p.st, p.bus)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("manager did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// addWebhook validates and stores a webhook.
func (p *platform) addWebhook(t *testing.T, w store.Webhook) store.Webhook {
	t.Helper()
	if w.Secret == "" {
		w.Secret = webhook.NewSecret()
	}
	if err := webhook.Validate(&w); err != nil {
		t.Fatal(err)
	}
	w, err := p.st.CreateWebhook(context.Background(), w)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// newJob creates a job with labels (publishing its JobCreated) and
// returns its id.
func (p *platform) newJob(t *testing.T, labels map[string]string) string {
	t.Helper()
	j, _, err := p.st.CreateJob(context.Background(), job.Spec{Command: []string{"true"}, Labels: labels}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return j.ID
}

// publish publishes one event about a job in a transaction of its own and
// returns its id.
func (p *platform) publish(t *testing.T, jobID string, payload proto.Message) int64 {
	t.Helper()
	var ids []int64
	err := p.st.InTx(context.Background(), func(tx pgx.Tx) error {
		var err error
		ids, err = eventbus.Publish(context.Background(), tx, eventbus.New("job", jobID, payload))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids[0]
}

// completed publishes a JobCompleted of the job.
func (p *platform) completed(t *testing.T, jobID string) int64 {
	t.Helper()
	return p.publish(t, jobID, &hodeiv1.JobCompleted{JobId: jobID, Attempt: 1})
}

// lastEventID is the id of the newest event.
func (p *platform) lastEventID(t *testing.T) int64 {
	t.Helper()
	var id int64
	if err := p.st.SQLForTests().QueryRow(context.Background(), "SELECT max(id) FROM events").Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// metric sums the samples of a family whose labels include all of want.
func (p *platform) metric(t *testing.T, name string, want map[string]string) (sum float64, series int) {
	t.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == v }) {
					continue next
				}
			}
			series++
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum, series
}

// received is one request an endpoint got, with the status it answered
// (0: none, the request ended first).
type received struct {
	header http.Header
	body   []byte
	status int
}

func (r received) delivery() int64 {
	id, _ := strconv.ParseInt(r.header.Get(webhook.HeaderDelivery), 10, 64)
	return id
}

// endpoint is an HTTP server in the test process that records what it is
// sent; respond picks the status of each request (it may block on the
// request's context).
type endpoint struct {
	*httptest.Server
	respond func(r *http.Request, got received) int

	mu      sync.Mutex
	got     []received
	changed chan struct{} // closed and replaced on every request
}

func newEndpoint(t *testing.T, respond func(r *http.Request, got received) int) *endpoint {
	t.Helper()
	e := &endpoint{respond: respond, changed: make(chan struct{})}
	if e.respond == nil {
		e.respond = func(*http.Request, received) int { return http.StatusNoContent }
	}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec := received{header: r.Header.Clone(), body: body}
		rec.status = e.respond(r, rec)
		if r.Context().Err() == nil {
			w.WriteHeader(rec.status)
		} else {
			rec.status = 0
		}
		e.mu.Lock()
		e.got = append(e.got, rec)
		close(e.changed)
		e.changed = make(chan struct{})
		e.mu.Unlock()
	}))
	t.Cleanup(e.Close)
	return e
}

// requests returns what the endpoint got so far.
func (e *endpoint) requests() []received {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

// delivered returns the deliveries answered with a 2xx, in order.
func (e *endpoint) delivered() []int64 { return deliveredIn(e.requests()) }

func deliveredIn(got []received) []int64 {
	var out []int64
	for _, r := range got {
		if r.status >= 200 && r.status < 300 {
			out = append(out, r.delivery())
		}
	}
	return out
}

// waitFor waits until cond holds for what the endpoint got.
func (e *endpoint) waitFor(t *testing.T, timeout time.Duration, what string, cond func(got []received) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		got, ch := slices.Clone(e.got), e.changed
		e.mu.Unlock()
		if cond(got) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("after %v: endpoint has not %s; got %v", timeout, what, deliveredIn(got))
		}
	}
}

// waitDelivered waits until every id was answered with a 2xx.
func (e *endpoint) waitDelivered(t *testing.T, ids ...int64) {
	t.Helper()
	e.waitFor(t, 15*time.Second, "got every delivery", func(got []received) bool {
		delivered := deliveredIn(got)
		for _, id := range ids {
			if !slices.Contains(delivered, id) {
				return false
			}
		}
		return true
	})
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: still not %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
