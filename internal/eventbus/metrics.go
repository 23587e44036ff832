package eventbus

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the bus's Prometheus series. A nil *Metrics records nothing.
type Metrics struct {
	published     *prometheus.CounterVec
	delivered     *prometheus.CounterVec
	failures      *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	reconnects    prometheus.Counter
	subscriberLag *prometheus.GaugeVec
	heldBack      *prometheus.CounterVec
	processing    *prometheus.HistogramVec
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		published:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_events_published_total", Help: "Events committed to the log, by type, as this process's feed read them (every replica counts every event: use max across replicas)."}, []string{"type"}),
		delivered:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_events_delivered_total", Help: "Events handled successfully, by subscriber and type."}, []string{"subscriber", "type"}),
		failures:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_event_handler_failures_total", Help: "Handler calls that returned an error."}, []string{"subscriber", "type"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_events_dead_lettered_total", Help: "Events parked after MaxAttempts failures."}, []string{"subscriber", "type"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hodei_event_handler_seconds", Help: "Handler latency.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"subscriber"}),
		reconnects:    prometheus.NewCounter(prometheus.CounterOpts{Name: "hodei_event_listener_reconnects_total", Help: "Reconnects of the LISTEN connection."}),
		subscriberLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hodei_event_subscriber_lag", Help: "Events after the subscriber's cursor; 0 once it has handled all it may read."}, []string{"subscriber"}),
		heldBack: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_event_reads_held_back_total",
			Help: "Subscriber reads that stopped before committed events because a transaction older than them was still open (the gap guard)."}, []string{"subscriber"}),
	}
	m.processing = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hodei_event_processing_seconds",
		Help:    "From an event's commit to the end of its handling, by consuming component (dispatcher, autoscaler, queue depth, log followers, subscribers).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14)}, []string{"consumer"})
	reg.MustRegister(m.published, m.delivered, m.failures, m.deadLetters, m.latency, m.reconnects, m.subscriberLag, m.heldBack, m.processing)
	return m
}

// published counts committed events (the feed calls it for what it reads,
// so rolled-back events are never counted).
func (m *Metrics) publishedEvents(events []Event) {
	if m == nil {
		return
	}
	for _, e := range events {
		m.published.WithLabelValues(e.Type).Inc()
	}
}

func (m *Metrics) handled(sub string, e Event, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.latency.WithLabelValues(sub).Observe(d.Seconds())
	if err != nil {
		m.failures.WithLabelValues(sub, e.Type).Inc()
		return
	}
	m.delivered.WithLabelValues(sub, e.Type).Inc()
}

func (m *Metrics) deadLettered(sub string, e Event) {
	if m != nil {
		m.deadLetters.WithLabelValues(sub, e.Type).Inc()
	}
}

func (m *Metrics) reconnect() {
	if m != nil {
		m.reconnects.Inc()
	}
}

func (m *Metrics) held(sub string) {
	if m != nil {
		m.heldBack.WithLabelValues(sub).Inc()
	}
}

func (m *Metrics) lag(sub string, n int64) {
	if m != nil {
		m.subscriberLag.WithLabelValues(sub).Set(float64(n))
	}
}

// forget removes the series of a subscriber that stopped.
func (m *Metrics) forget(sub string) {
	if m == nil {
		return
	}
	bySub := prometheus.Labels{"subscriber": sub}
	m.delivered.DeletePartialMatch(bySub)
	m.failures.DeletePartialMatch(bySub)
	m.deadLetters.DeletePartialMatch(bySub)
	m.latency.DeleteLabelValues(sub)
	m.subscriberLag.DeleteLabelValues(sub)
	m.heldBack.DeleteLabelValues(sub)
}

// timed wraps a named tail's handler so that it observes each event's
// processing latency; the series is resolved once per tail.
func (m *Metrics) timed(consumer string, fn func(Event) error) func(Event) error {
	if m == nil || consumer == "" {
		return fn
	}
	o := m.processing.WithLabelValues(consumer)
	return func(e Event) error {
		err := fn(e)
		if !e.Time.IsZero() {
			o.Observe(time.Since(e.Time).Seconds())
		}
		return err
	}
}

// processed observes a durable subscriber's processing latency of e.
func (m *Metrics) processed(sub string, e Event) {
	if m != nil && !e.Time.IsZero() {
		m.processing.WithLabelValues(sub).Observe(time.Since(e.Time).Seconds())
	}
}
