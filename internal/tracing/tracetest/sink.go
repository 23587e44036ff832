// Package tracetest is an OTLP/HTTP trace collector for tests: a fake of
// the collector an operator runs (none can run here), over real HTTP on
// loopback, that keeps the spans exported to it.
package tracetest

import (
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Sink keeps every span exported to it, with the service that sent it.
type Sink struct {
	mu    sync.Mutex
	spans []Span
}

// Span is an exported span and its resource's service.name.
type Span struct {
	Service string
	*tracepb.Span
}

// Start serves a sink on loopback until the test ends and returns it with
// its endpoint URL.
func Start(t testing.TB) (*Sink, string) {
	t.Helper()
	s := &Sink{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(s.export)}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return s, "http://" + ln.Addr().String()
}

func (s *Sink) export(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
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
		http.Error(w, "bad export", http.StatusBadRequest)
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
				s.spans = append(s.spans, Span{service, sp})
			}
		}
	}
	s.mu.Unlock()
	b, _ = proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(b) //nolint:errcheck
}

// All returns the spans exported so far.
func (s *Sink) All() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.spans)
}

// Named returns the spans called name exported for job id (their
// hodei.job_id attribute).
func (s *Sink) Named(id, name string) []*tracepb.Span {
	var out []*tracepb.Span
	for _, sp := range s.All() {
		if sp.Name == name && Attr(sp.Span, "hodei.job_id") == id {
			out = append(out, sp.Span)
		}
	}
	return out
}

// Attr is a span's text attribute key ("" when it has none).
func Attr(sp *tracepb.Span, key string) string {
	for _, a := range sp.Attributes {
		if a.Key == key {
			return a.GetValue().GetStringValue()
		}
	}
	return ""
}
