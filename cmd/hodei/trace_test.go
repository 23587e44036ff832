package main

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// otlpSink is a fake OTLP/HTTP collector (no collector can run here):
// it keeps the spans exported to it, with the service that sent them.
type otlpSink struct {
	mu    sync.Mutex
	spans []sunkSpan
}

type sunkSpan struct {
	service string
	*tracepb.Span
}

func startOTLPSink(t *testing.T) (*otlpSink, string) {
	t.Helper()
	s := &otlpSink{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		var req coltrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &req)
		}
		if err != nil || r.URL.Path != "/v1/traces" {
			http.Error(w, "bad export", 400)
			return
		}
		s.mu.Lock()
		for _, rs := range req.ResourceSpans {
			var service string
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					s.spans = append(s.spans, sunkSpan{service, sp})
				}
			}
		}
		s.mu.Unlock()
		b, _ = proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(b)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s, "http://" + ln.Addr().String()
}

func (s *otlpSink) all() []sunkSpan {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.spans)
}

// TestOneTracePerAttempt: with --otlp-endpoint, a job's attempt is one
// trace across the server (submit, claim, result commit, the attempt's
// root span) and the agent (run, process), the agent joining it through
// RunJob's traceparent; the SubmitJob RPC's span continues the caller's
// traceparent header and the submit span links to it.
func TestOneTracePerAttempt(t *testing.T) {
	t.Parallel()
	sink, endpoint := startOTLPSink(t)
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
	var attempt []sunkSpan
	var rpc *tracepb.Span
	var names []string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("spans of the job: %q; SubmitJob span found: %v; %d spans exported", names, rpc != nil, len(sink.all()))
		}
	})
	// Spans leave in batches every 5 s.
	eventually(t, 20*time.Second, "the attempt's spans exported", func() bool {
		attempt, rpc, names = nil, nil, nil
		for _, s := range sink.all() {
			if hex.EncodeToString(s.TraceId) == callerTrace && s.Name == "/hodei.v1.JobService/SubmitJob" {
				rpc = s.Span
			}
			if slices.ContainsFunc(s.Attributes, func(a *commonKV) bool { return a.Key == "hodei.job_id" && a.GetValue().GetStringValue() == id }) {
				attempt = append(attempt, s)
				names = append(names, s.service+"/"+s.Name)
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
			t.Errorf("%s/%s is in trace %x, want the attempt's %x", s.service, s.Name, s.TraceId, root.TraceId)
		}
		parent := root.SpanId
		if s.Name == "process" {
			parent = spanNamed(attempt, "run job").SpanId
		}
		if s.Name != "job attempt" && string(s.ParentSpanId) != string(parent) {
			t.Errorf("%s/%s has parent %x, want %x", s.service, s.Name, s.ParentSpanId, parent)
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

func spanNamed(spans []sunkSpan, name string) *tracepb.Span {
	for _, s := range spans {
		if s.Name == name {
			return s.Span
		}
	}
	return &tracepb.Span{}
}
