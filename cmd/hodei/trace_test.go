package main

import (
	"context"
	"encoding/hex"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/tracing/tracetest"
)

// TestOneTracePerAttempt: with --otlp-endpoint, a job's attempt is one
// trace across the server (submit, claim, result commit, the attempt's
// root span) and the agent (run, process), the agent joining it through
// RunJob's traceparent; the SubmitJob RPC's span continues the caller's
// traceparent header and the submit span links to it.
func TestOneTracePerAttempt(t *testing.T) {
	t.Parallel()
	sink, endpoint := tracetest.Start(t)
	addr := freeAddr(t)
	dev := spawnPlatform(t, nil, "dev", "--listen", addr, "--data-dir", filepath.Join(searchableDir(t), "pg"), "--max-workers", "1", "--otlp-endpoint", endpoint)
	dev.waitLog(t, 60*time.Second, "Hodei is running on "+addr)
	c := jobClient(addr)
	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req := connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: &hodeiv1.JobSpec{Command: []string{"echo", "traced"}}})
	req.Header().Set("traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	res, err := c.SubmitJob(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.Job.Id
	if j := pollJob(t, c, id, 30*time.Second, "final", isFinal); j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v, want SUCCEEDED", j.State)
	}
	want := []string{"hodei-agent/process", "hodei-agent/run job", "hodei-server/claim", "hodei-server/commit result", "hodei-server/job attempt", "hodei-server/submit"}
	var attempt []tracetest.Span
	var rpc *tracepb.Span
	var names []string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("spans of the job: %q; SubmitJob span found: %v; %d spans exported", names, rpc != nil, len(sink.All()))
		}
	})
	// Spans leave in batches every 5 s.
	eventually(t, 20*time.Second, "the attempt's spans exported", func() bool {
		attempt, rpc, names = nil, nil, nil
		for _, s := range sink.All() {
			if hex.EncodeToString(s.TraceId) == callerTrace && s.Name == "/hodei.v1.JobService/SubmitJob" {
				rpc = s.Span
			}
			if slices.ContainsFunc(s.Attributes, func(a *commonKV) bool { return a.Key == "hodei.job_id" && a.GetValue().GetStringValue() == id }) {
				attempt = append(attempt, s)
				names = append(names, s.Service+"/"+s.Name)
			}
		}
		slices.Sort(names)
		return slices.Equal(names, want) && rpc != nil
	})
	var root *tracepb.Span
	for _, s := range attempt {
		if s.Name == "job attempt" {
			root = s.Span
		}
	}
	if len(root.ParentSpanId) != 0 {
		t.Errorf("the job attempt span has a parent %x, want none", root.ParentSpanId)
	}
	for _, s := range attempt {
		if string(s.TraceId) != string(root.TraceId) {
			t.Errorf("%s/%s is in trace %x, want the attempt's %x", s.Service, s.Name, s.TraceId, root.TraceId)
		}
		parent := root.SpanId
		if s.Name == "process" {
			parent = spanNamed(attempt, "run job").SpanId
		}
		if s.Name != "job attempt" && string(s.ParentSpanId) != string(parent) {
			t.Errorf("%s/%s has parent %x, want %x", s.Service, s.Name, s.ParentSpanId, parent)
		}
	}
	if hex.EncodeToString(rpc.ParentSpanId) != callerSpan {
		t.Errorf("SubmitJob's span has parent %x, want the caller's %s", rpc.ParentSpanId, callerSpan)
	}
	if l := spanNamed(attempt, "submit").Links; len(l) != 1 || string(l[0].SpanId) != string(rpc.SpanId) {
		t.Errorf("submit span links %v, want the SubmitJob span %x", l, rpc.SpanId)
	}
}

type commonKV = commonpb.KeyValue

func spanNamed(spans []tracetest.Span, name string) *tracepb.Span {
	for _, s := range spans {
		if s.Name == name {
			return s.Span
		}
	}
	return &tracepb.Span{}
}
