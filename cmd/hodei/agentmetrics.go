package main

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hodei-dev/hodei/internal/agent"
)

// agentCounters serves an agent's counters as the series the server
// exports for it (hodei_agent_*), without the worker labels: the
// endpoint is the worker.
type agentCounters struct{ a *agent.Agent }

var (
	agentReconnects  = prometheus.NewDesc("hodei_agent_reconnects_total", "Streams this agent re-established after losing one.", nil, nil)
	agentReconnectS  = prometheus.NewDesc("hodei_agent_reconnect_seconds", "Time this agent's reconnects took, from the loss of its stream to the server's welcome.", nil, nil)
	agentLogLines    = prometheus.NewDesc("hodei_agent_log_lines_total", "Output lines this agent read from its jobs.", nil, nil)
	agentLogsDropped = prometheus.NewDesc("hodei_agent_log_lines_dropped_total", "Output lines this agent discarded (its log buffer stayed full for more than 5 s).", nil, nil)
)

func (c agentCounters) Describe(ch chan<- *prometheus.Desc) {
	ch <- agentReconnects
	ch <- agentReconnectS
	ch <- agentLogLines
	ch <- agentLogsDropped
}

func (c agentCounters) Collect(ch chan<- prometheus.Metric) {
	s := c.a.Counters()
	ch <- prometheus.MustNewConstMetric(agentReconnects, prometheus.CounterValue, float64(s.Reconnects))
	ch <- prometheus.MustNewConstSummary(agentReconnectS, uint64(s.Reconnects), s.ReconnectTime.Seconds(), nil)
	ch <- prometheus.MustNewConstMetric(agentLogLines, prometheus.CounterValue, float64(s.LogLines))
	ch <- prometheus.MustNewConstMetric(agentLogsDropped, prometheus.CounterValue, float64(s.LogLinesDropped))
}

// listenAgentMetrics listens on addr before the agent starts (a taken
// address is an error at once) and serves /metrics until ctx ends.
func listenAgentMetrics(log *slog.Logger, addr string, a *agent.Agent) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(agentCounters{a}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// HTTP/1 and h2c, as the server's port.
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: mux, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("agent metrics endpoint", "err", err)
		}
	}()
	log.Info("agent metrics listening", "addr", ln.Addr().String())
	return func() {
		hs.Close()
		<-done
	}, nil
}
