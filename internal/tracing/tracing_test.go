package tracing

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// TestAttemptIDs: an attempt's trace is the same wherever it is derived,
// differs between attempts and jobs, and survives the traceparent the
// worker stream carries.
func TestAttemptIDs(t *testing.T) {
	ctx := context.Background()
	const job = "01a24357-7d9b-7219-b00b-c52df3cadb72"
	a1 := trace.SpanContextFromContext(Attempt(ctx, job, 1))
	if again := trace.SpanContextFromContext(Attempt(ctx, job, 1)); !again.Equal(a1) {
		t.Errorf("attempt 1 derived twice: %v and %v", a1, again)
	}
	if a2 := trace.SpanContextFromContext(Attempt(ctx, job, 2)); a2.TraceID() == a1.TraceID() {
		t.Error("attempts 1 and 2 share a trace")
	}
	if other := trace.SpanContextFromContext(Attempt(ctx, strings.Replace(job, "a", "b", 1), 1)); other.TraceID() == a1.TraceID() {
		t.Error("two jobs share a trace")
	}
	tp := Traceparent(Attempt(ctx, job, 1))
	if want := "00-" + a1.TraceID().String() + "-" + a1.SpanID().String() + "-01"; tp != want {
		t.Errorf("traceparent %q, want %q", tp, want)
	}
	back := trace.SpanContextFromContext(WithTraceparent(ctx, tp))
	if back.TraceID() != a1.TraceID() || back.SpanID() != a1.SpanID() {
		t.Errorf("traceparent read back as %v, want %v", back, a1)
	}
	if got := WithTraceparent(ctx, ""); got != ctx {
		t.Error("an empty traceparent changed the context")
	}
}

// TestOffByDefault: without an endpoint there is no tracer, and a nil
// tracer's spans record nothing.
func TestOffByDefault(t *testing.T) {
	tr, err := New(context.Background(), "", "test")
	if err != nil || tr != nil {
		t.Fatalf("New without endpoint = %v, %v; want nil, nil", tr, err)
	}
	if tr.Enabled() {
		t.Error("a nil tracer is enabled")
	}
	_, sp := tr.Span(context.Background(), "x", time.Time{})
	if sp.IsRecording() {
		t.Error("a nil tracer's span records")
	}
	tr.Root(context.Background(), "j", 1, time.Time{}, time.Time{})
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"collector:4318", "ftp://c", "http://"} {
		if _, err := New(context.Background(), bad, "test"); err == nil || !strings.Contains(err.Error(), "otlp endpoint") {
			t.Errorf("New(%q) = %v, want an error naming the otlp endpoint", bad, err)
		}
	}
}
