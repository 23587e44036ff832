package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/tracing"
)

// metrics are the server's own series. Per-request and per-report work is
// an atomic add on a series resolved in advance; the worker and agent
// series are read at scrape time.
type metrics struct {
	jobsCreated *prometheus.CounterVec
	logLines    prometheus.Counter
	toStarted   prometheus.Histogram
	rpc         *rpcMetrics

	secretAccesses *prometheus.CounterVec
	redactions     prometheus.Counter
	leaksBlocked   prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, st *store.Store, ws *WorkerSet, tr *tracing.Tracer) *metrics {
	m := &metrics{
		jobsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_jobs_created_total", Help: "Jobs created, by type."}, []string{"type"}),
		logLines:    prometheus.NewCounter(prometheus.CounterOpts{Name: "hodei_log_lines_stored_total", Help: "Log lines stored."}),
		toStarted: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hodei_attempt_assigned_to_started_seconds",
			Help: "From assignment to the agent's start report.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		rpc: newRPCMetrics(reg, tr),
		secretAccesses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_secret_accesses_total",
			Help: "Reads and changes of secrets, by operation (dispatch, set, delete, rotate-key)."}, []string{"operation"}),
		redactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "hodei_log_redactions_total",
			Help: "Secret values masked in job output, by the agents and by the server's second redaction."}),
		leaksBlocked: prometheus.NewCounter(prometheus.CounterOpts{Name: "hodei_secret_leaks_blocked_total",
			Help: "Log lines that reached the server holding a secret value or canary the agent had not masked (always a bug)."}),
	}
	stale := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hodei_stale_reports_total",
		Help: "Worker reports (start, logs, result) rejected for a stale fencing token."}, func() float64 { return float64(st.StaleReports()) })
	reg.MustRegister(m.jobsCreated, m.logLines, m.toStarted, stale, workerCounts{st}, agentCollector{ws},
		m.secretAccesses, m.redactions, m.leaksBlocked)
	return m
}

// workerStates are the states of hodei_workers: every one is reported
// (0 when empty) for each provider that has workers.
var workerStates = []string{"provisioning", "connected", "disconnected", "draining"}

var workersDesc = prometheus.NewDesc("hodei_workers",
	"Workers that are not terminated, by provider and state (the database's count: every replica reports the same).",
	[]string{"provider", "state"}, nil)

// workerCounts reports hodei_workers from the database at scrape time.
type workerCounts struct{ st *store.Store }

func (w workerCounts) Describe(ch chan<- *prometheus.Desc) { ch <- workersDesc }

func (w workerCounts) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := w.st.CountWorkers(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(workersDesc, err)
		return
	}
	byProvider := map[string]map[string]int64{}
	for _, c := range counts {
		if byProvider[c.Provider] == nil {
			byProvider[c.Provider] = map[string]int64{}
		}
		byProvider[c.Provider][c.State] += c.N
	}
	for p, states := range byProvider {
		for _, s := range workerStates {
			ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(states[s]), p, s)
		}
	}
}

// agentCounters are the totals an agent sends with its heartbeats.
type agentCounters struct {
	reconnects, logLines, logDropped int64
	reconnectSeconds                 float64
}

var (
	agentLabels      = []string{"provider", "worker"}
	agentReconnects  = prometheus.NewDesc("hodei_agent_reconnects_total", "Streams the agent re-established after losing one, since it started.", agentLabels, nil)
	agentReconnectS  = prometheus.NewDesc("hodei_agent_reconnect_seconds", "Time the agent's reconnects took, from the loss of its stream to the server's welcome (count: reconnects).", agentLabels, nil)
	agentLogLines    = prometheus.NewDesc("hodei_agent_log_lines_total", "Output lines the agent read from its jobs, since it started.", agentLabels, nil)
	agentLogsDropped = prometheus.NewDesc("hodei_agent_log_lines_dropped_total", "Output lines the agent discarded (its log buffer stayed full for more than 5 s), since it started.", agentLabels, nil)
)

// agentCollector reports the counters of the agents connected to this
// replica: a worker's series exist while its stream is open here.
type agentCollector struct{ ws *WorkerSet }

func (a agentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- agentReconnects
	ch <- agentReconnectS
	ch <- agentLogLines
	ch <- agentLogsDropped
}

func (a agentCollector) Collect(ch chan<- prometheus.Metric) {
	a.ws.mu.Lock()
	conns := make([]*workerConn, 0, len(a.ws.conns))
	for _, c := range a.ws.conns {
		conns = append(conns, c)
	}
	a.ws.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		ac, ok := c.agent, c.agentReported
		c.mu.Unlock()
		if !ok {
			continue // an agent that sends no counters (an older one)
		}
		ch <- prometheus.MustNewConstMetric(agentReconnects, prometheus.CounterValue, float64(ac.reconnects), c.provider, c.id)
		ch <- prometheus.MustNewConstSummary(agentReconnectS, uint64(ac.reconnects), ac.reconnectSeconds, nil, c.provider, c.id)
		ch <- prometheus.MustNewConstMetric(agentLogLines, prometheus.CounterValue, float64(ac.logLines), c.provider, c.id)
		ch <- prometheus.MustNewConstMetric(agentLogsDropped, prometheus.CounterValue, float64(ac.logDropped), c.provider, c.id)
	}
}
