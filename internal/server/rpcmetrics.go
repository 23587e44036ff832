package server

import (
	"context"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-dev/hodei/internal/tracing"
)

// rpcMetrics is the Connect interceptor that traces unary calls when
// tracing is on, and counts every procedure's
// calls: a unary call once, with its code, and its latency; a stream by
// the messages it receives (code "ok"), and once more with its code when
// it ends in an error. The label values are the procedure (a fixed path
// of the API) and the Connect code: bounded.
type rpcMetrics struct {
	tracer   *tracing.Tracer // unary calls get a span, under the caller's traceparent
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	procs    sync.Map // procedure -> *procSeries
}

// procSeries are a procedure's series resolved once: the call path adds
// to them without a map lookup by labels.
type procSeries struct {
	ok       prometheus.Counter
	duration prometheus.Observer
}

func newRPCMetrics(reg prometheus.Registerer, tr *tracing.Tracer) *rpcMetrics {
	m := &rpcMetrics{tracer: tr,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_rpc_requests_total",
			Help: "RPC calls by procedure and code; a stream counts each message it receives, and its end when that is an error."}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hodei_rpc_duration_seconds",
			Help: "Latency of unary RPC calls, by procedure.", Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 14)}, []string{"procedure"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

func (m *rpcMetrics) series(procedure string) *procSeries {
	if p, ok := m.procs.Load(procedure); ok {
		return p.(*procSeries)
	}
	p, _ := m.procs.LoadOrStore(procedure, &procSeries{ok: m.requests.WithLabelValues(procedure, "ok"), duration: m.duration.WithLabelValues(procedure)})
	return p.(*procSeries)
}

func (m *rpcMetrics) ended(procedure string, p *procSeries, err error) {
	if err == nil {
		p.ok.Inc()
		return
	}
	m.requests.WithLabelValues(procedure, connect.CodeOf(err).String()).Inc()
}

func (m *rpcMetrics) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		proc := req.Spec().Procedure
		p := m.series(proc)
		start := time.Now()
		var span trace.Span
		if m.tracer.Enabled() {
			ctx, span = m.tracer.Span(tracing.Extract(ctx, propagation.HeaderCarrier(req.Header())), proc, start)
		}
		res, err := next(ctx, req)
		p.duration.Observe(time.Since(start).Seconds())
		m.ended(proc, p, err)
		if span != nil {
			if err != nil {
				span.SetStatus(codes.Error, connect.CodeOf(err).String())
			}
			span.End()
		}
		return res, err
	}
}

func (m *rpcMetrics) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (m *rpcMetrics) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		proc := conn.Spec().Procedure
		p := m.series(proc)
		if m.tracer.Enabled() {
			ctx = tracing.Extract(ctx, propagation.HeaderCarrier(conn.RequestHeader()))
		}
		err := next(ctx, countingConn{conn, p.ok})
		if err != nil {
			m.ended(proc, p, err)
		}
		return err
	}
}

// countingConn counts the messages a stream receives.
type countingConn struct {
	connect.StreamingHandlerConn
	received prometheus.Counter
}

func (c countingConn) Receive(msg any) error {
	err := c.StreamingHandlerConn.Receive(msg)
	if err == nil {
		c.received.Inc()
	}
	return err
}
