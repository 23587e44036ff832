package webhook

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the webhooks' Prometheus series; the bus's per-subscriber
// series cover the rest (subscriber "webhook:NAME"). A webhook's series
// are removed when its delivery stops, so there are at most four per
// webhook this replica delivers to. A nil *Metrics records nothing.
type Metrics struct {
	deliveries *prometheus.CounterVec
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome: delivered (2xx), rejected (another answer), timeout, error (no connection)."},
			[]string{"webhook", "outcome"}),
	}
	reg.MustRegister(m.deliveries)
	return m
}

func (m *Metrics) delivery(name, outcome string) {
	if m != nil {
		m.deliveries.WithLabelValues(name, outcome).Inc()
	}
}

// forget removes the series of a webhook this replica stopped sending to.
func (m *Metrics) forget(name string) {
	if m != nil {
		m.deliveries.DeletePartialMatch(prometheus.Labels{"webhook": name})
	}
}
