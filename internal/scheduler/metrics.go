package scheduler

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hodei-dev/hodei/internal/eventbus"
)

// Metrics are the dispatcher's series. A nil *Metrics records nothing.
type Metrics struct {
	createdToAssigned prometheus.Histogram
	passes            *prometheus.CounterVec
	passFailures      prometheus.Counter
	claimsPerPass     prometheus.Histogram
	queueDepth        *prometheus.GaugeVec
	attempts          prometheus.Histogram
	retries           *prometheus.CounterVec
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		createdToAssigned: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hodei_job_created_to_assigned_seconds",
			Help: "From job creation to its first assignment.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_dispatch_passes_total",
			Help: "Dispatch passes, by what triggered them."}, []string{"trigger"}),
		passFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "hodei_dispatch_pass_failures_total",
			Help: "Dispatch passes that failed (a database error); the next pass follows a second later."}),
		claimsPerPass: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hodei_dispatch_claims_per_pass",
			Help: "Jobs claimed by one dispatch pass.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hodei_jobs",
			Help: "Jobs in each non-final state (set by the leader)."}, []string{"state"}),
	}
	m.attempts = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hodei_job_attempts",
		Help: "Attempts a job took, observed when it ends (leader).", Buckets: []float64{1, 2, 3, 4, 5, 7, 10, 20, 50, 100}})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_job_retries_total",
		Help: "Retry outcomes (leader): scheduled, succeeded (a retried job succeeded), exhausted."}, []string{"outcome"})
	reg.MustRegister(m.createdToAssigned, m.passes, m.passFailures, m.claimsPerPass, m.queueDepth, m.attempts, m.retries)
	return m
}

func (m *Metrics) pass(trigger string, claimed int) {
	if m == nil {
		return
	}
	m.passes.WithLabelValues(trigger).Inc()
	m.claimsPerPass.Observe(float64(claimed))
}

func (m *Metrics) passFailed() {
	if m != nil {
		m.passFailures.Inc()
	}
}

func (m *Metrics) assigned(seconds float64) {
	if m != nil {
		m.createdToAssigned.Observe(seconds)
	}
}

func (m *Metrics) depth(state string, n int64) {
	if m != nil {
		m.queueDepth.WithLabelValues(state).Set(float64(n))
	}
}

// jobEvent records retry outcomes and attempts per job from job events;
// it decodes the payload of only the events that end a job.
func (m *Metrics) jobEvent(e eventbus.Event) error {
	if m == nil {
		return nil
	}
	switch e.Type {
	case "JobRetryScheduled":
		m.retries.WithLabelValues("scheduled").Inc()
	case "JobRetryExhausted":
		m.retries.WithLabelValues("exhausted").Inc()
	case "JobCompleted", "JobFailed":
		p, err := e.Decode()
		if err != nil {
			return err
		}
		if c := p.GetJobCompleted(); c != nil {
			m.attempts.Observe(float64(c.GetAttempt()))
			if c.GetAttempt() > 1 {
				m.retries.WithLabelValues("succeeded").Inc()
			}
		} else if f := p.GetJobFailed(); f.GetFinal() {
			m.attempts.Observe(float64(f.GetAttempt()))
		}
	}
	return nil
}
