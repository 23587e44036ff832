package autoscale

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	checks      *prometheus.CounterVec
	checkTime   *prometheus.HistogramVec
	unhealthy   *prometheus.GaugeVec
	provisions  *prometheus.CounterVec
	provTime    *prometheus.HistogramVec
	terminateds *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_provider_health_checks_total",
			Help: "Provider health checks, by result (success, error)."}, []string{"provider", "result"}),
		checkTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hodei_provider_health_check_seconds",
			Help: "Provider health check latency.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}, []string{"provider"}),
		unhealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hodei_provider_unhealthy_seconds",
			Help: "How long a provider has been unhealthy (0 when healthy); alert at 120."}, []string{"provider"}),
		provisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_workers_provisioned_total",
			Help: "Workers provisioned, by provider and result."}, []string{"provider", "result"}),
		provTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hodei_provision_seconds",
			Help: "Provider provision call latency.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"provider"}),
		terminateds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_workers_terminated_total",
			Help: "Workers terminated by the autoscaler."}, []string{"provider"}),
	}
	reg.MustRegister(m.checks, m.checkTime, m.unhealthy, m.provisions, m.provTime, m.terminateds)
	return m
}

func (m *metrics) healthCheck(p string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.checkTime.WithLabelValues(p).Observe(d.Seconds())
	if err != nil {
		m.checks.WithLabelValues(p, "error").Inc()
	} else {
		m.checks.WithLabelValues(p, "success").Inc()
	}
}

func (m *metrics) unhealthyFor(p string, d time.Duration) {
	if m != nil {
		m.unhealthy.WithLabelValues(p).Set(d.Seconds())
	}
}

func (m *metrics) provisioned(p string, d time.Duration) {
	if m != nil {
		m.provisions.WithLabelValues(p, "ok").Inc()
		m.provTime.WithLabelValues(p).Observe(d.Seconds())
	}
}

func (m *metrics) provisionFailed(p string) {
	if m != nil {
		m.provisions.WithLabelValues(p, "error").Inc()
	}
}

func (m *metrics) terminated(p string) {
	if m != nil {
		m.terminateds.WithLabelValues(p).Inc()
	}
}
