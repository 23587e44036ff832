// Package tracing gives each job attempt one OpenTelemetry trace across
// the processes it crosses: submit and claim (server), RunJob, process
// start and result (agent), and the result's commit or the attempt's end
// without a result: cancelled, its worker lost, timed out (server). The trace
// and its root span have ids derived from the job id and the attempt
// number, so that every component finds the attempt's trace without
// storing it; the worker stream carries a W3C traceparent to the agent
// (RunJob.traceparent), and RPC headers carry one into the server.
//
// Tracing is off unless an OTLP endpoint is configured: then New returns
// nil, every method of a nil *Tracer does nothing, and callers test
// Enabled before building anything for a span (the hot path pays one
// nil check).
package tracing

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracer exports spans to an OTLP/HTTP endpoint. A nil *Tracer is off.
type Tracer struct {
	tp *sdktrace.TracerProvider
	t  trace.Tracer
}

// New returns a tracer exporting to endpoint (an OTLP/HTTP URL such as
// http://collector:4318; without a path, /v1/traces), or nil when
// endpoint is empty. service names
// the process in its spans (hodei-server, hodei-agent).
func New(ctx context.Context, endpoint, service string) (*Tracer, error) {
	if endpoint == "" {
		return nil, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("otlp endpoint %q: must be an http:// or https:// URL with a host", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces" // the OTLP/HTTP default
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return nil, fmt.Errorf("otlp endpoint %q: %w", endpoint, err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithIDGenerator(attemptIDs{}),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))),
	)
	return &Tracer{tp: tp, t: tp.Tracer("github.com/hodei-dev/hodei")}, nil
}

// Enabled reports whether spans are recorded.
func (t *Tracer) Enabled() bool { return t != nil }

// Shutdown flushes the spans not yet exported.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// ids returns the trace id of attempt n of job id and the id of its root
// span: the first 24 bytes of SHA-256 over both.
func ids(jobID string, attempt int) (trace.TraceID, trace.SpanID) {
	h := sha256.New()
	h.Write([]byte(jobID))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(attempt))
	h.Write(n[:])
	sum := h.Sum(nil)
	var tid trace.TraceID
	var sid trace.SpanID
	copy(tid[:], sum[:16])
	copy(sid[:], sum[16:24])
	return tid, sid
}

// Attempt returns ctx under the root span of attempt n of job id: spans
// started from it belong to the attempt's trace.
func Attempt(ctx context.Context, jobID string, attempt int) context.Context {
	tid, sid := ids(jobID, attempt)
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true}))
}

// Span starts a span named name at start under ctx's span (Attempt, or a
// traceparent's), or returns a span that records nothing when t is nil.
func (t *Tracer) Span(ctx context.Context, name string, start time.Time, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noSpan
	}
	return t.t.Start(ctx, name, trace.WithTimestamp(start), trace.WithAttributes(attrs...))
}

// Root records the root span of attempt n of job id, named "job attempt",
// from start to end: the span the attempt's other spans hang from.
func (t *Tracer) Root(ctx context.Context, jobID string, attempt int, start, end time.Time, attrs ...attribute.KeyValue) {
	if t == nil {
		return
	}
	tid, sid := ids(jobID, attempt)
	ctx = context.WithValue(trace.ContextWithSpanContext(ctx, trace.SpanContext{}), fixedIDs{}, [2][]byte{tid[:], sid[:]})
	_, s := t.t.Start(ctx, "job attempt", trace.WithNewRoot(), trace.WithTimestamp(start),
		trace.WithAttributes(append(attrs, attribute.String("hodei.job_id", jobID), attribute.Int("hodei.attempt", attempt))...))
	s.End(trace.WithTimestamp(end))
}

var (
	propagator = propagation.TraceContext{}
	noSpan     = trace.SpanFromContext(context.Background()) // records nothing
)

// Traceparent is the W3C traceparent of ctx's span ("" without one).
func Traceparent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceparent returns ctx under the span a W3C traceparent names;
// ctx as it is when tp is empty or invalid.
func WithTraceparent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}

// Extract returns ctx under the span of the traceparent header of h.
func Extract(ctx context.Context, h propagation.TextMapCarrier) context.Context {
	return propagator.Extract(ctx, h)
}

// fixedIDs carries the ids Root wants for its span.
type fixedIDs struct{}

// attemptIDs generates random ids, except for the root span of an
// attempt, whose ids are derived (fixedIDs in the context).
type attemptIDs struct{}

func (attemptIDs) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	var tid trace.TraceID
	var sid trace.SpanID
	if v, ok := ctx.Value(fixedIDs{}).([2][]byte); ok {
		copy(tid[:], v[0])
		copy(sid[:], v[1])
		return tid, sid
	}
	binary.NativeEndian.PutUint64(tid[:8], rand.Uint64())
	binary.NativeEndian.PutUint64(tid[8:], rand.Uint64())
	binary.NativeEndian.PutUint64(sid[:], rand.Uint64())
	return tid, sid
}

func (attemptIDs) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	var sid trace.SpanID
	binary.NativeEndian.PutUint64(sid[:], rand.Uint64())
	return sid
}
