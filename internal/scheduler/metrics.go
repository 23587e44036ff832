package scheduler

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
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
	completed         *prometheus.CounterVec
	duration          *prometheus.HistogramVec
	queueWait         *prometheus.HistogramVec
	// waits holds the queue-wait child of each job type seen, so that a
	// claim resolves its series with one map read (type -> Observer).
	waits sync.Map
}

// Outcomes are the values of the outcome label of hodei_jobs_completed_total
// and hodei_job_duration_seconds.
var Outcomes = []string{"succeeded", "failed", "cancelled", "timed_out"}

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
	m.completed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_jobs_completed_total",
		Help: "Jobs that reached a final state, by type and outcome (leader)."}, []string{"type", "outcome"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hodei_job_duration_seconds",
		Help:    "Run time of a job's last attempt (start, or assignment, to result), by type and outcome (leader).",
		Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 14)}, []string{"type", "outcome"})
	m.queueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hodei_job_queue_wait_seconds",
		Help:    "From when an attempt could run (creation, or its retry's time) to its assignment, by job type.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 16)}, []string{"type"})
	reg.MustRegister(m.createdToAssigned, m.passes, m.passFailures, m.claimsPerPass, m.queueDepth, m.attempts, m.retries,
		m.completed, m.duration, m.queueWait)
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

// waited records how long an attempt of a job of type typ waited to be
// assigned. Called for every claimed job: the type's series is resolved
// once and kept.
func (m *Metrics) waited(typ string, seconds float64) {
	if m == nil {
		return
	}
	o, ok := m.waits.Load(typ)
	if !ok {
		o, _ = m.waits.LoadOrStore(typ, m.queueWait.WithLabelValues(typ))
	}
	o.(prometheus.Observer).Observe(seconds)
}

func (m *Metrics) depth(state string, n int64) {
	if m != nil {
		m.queueDepth.WithLabelValues(state).Set(float64(n))
	}
}

// jobEvent records retry outcomes, attempts per job, and completed jobs
// and their duration from job events; it decodes the payload of only the
// events that end an attempt.
func (m *Metrics) jobEvent(e eventbus.Event) error {
	if m == nil {
		return nil
	}
	switch e.Type {
	case "JobRetryScheduled":
		m.retries.WithLabelValues("scheduled").Inc()
	case "JobRetryExhausted":
		m.retries.WithLabelValues("exhausted").Inc()
	case "JobCompleted", "JobFailed", "JobCancelled":
		p, err := e.Decode()
		if err != nil {
			return err
		}
		if c := p.GetJobCompleted(); c != nil {
			m.attempts.Observe(float64(c.GetAttempt()))
			if c.GetAttempt() > 1 {
				m.retries.WithLabelValues("succeeded").Inc()
			}
			m.ended(c.GetType(), "succeeded", c.GetDuration())
		} else if f := p.GetJobFailed(); f.GetFinal() {
			m.attempts.Observe(float64(f.GetAttempt()))
			outcome := "failed"
			if f.GetState() == hodeiv1.JobState_JOB_STATE_TIMED_OUT {
				outcome = "timed_out"
			}
			m.ended(f.GetType(), outcome, f.GetDuration())
		} else if c := p.GetJobCancelled(); c != nil {
			m.ended(c.GetType(), "cancelled", c.GetDuration())
		}
	}
	return nil
}

// ended counts a job that reached a final state and, when its last
// attempt ran (d set), observes how long that took.
func (m *Metrics) ended(typ, outcome string, d *durationpb.Duration) {
	m.completed.WithLabelValues(typ, outcome).Inc()
	if d != nil {
		m.duration.WithLabelValues(typ, outcome).Observe(d.AsDuration().Seconds())
	}
}
