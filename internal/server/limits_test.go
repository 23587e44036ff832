package server

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/frame"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// serveOnLoopback serves a Server on a fresh database on 127.0.0.1 until
// the test ends and returns its base URL and an admin token.
func serveOnLoopback(t *testing.T) (string, string) {
	t.Helper()
	st := storetest.Open(t)
	base, _ := apiServer(t, st)
	return base, newToken(t, st, "admin", 0, auth.Admin)
}

// h2c is a cleartext HTTP/2 client, as agents and the CLI use.
func h2c() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}

// filler yields a prefix, n bytes of 'a' and a suffix without holding
// them, and counts what was read of it.
type filler struct {
	prefix, suffix []byte
	n, read        int64
}

func (f *filler) size() int64 { return int64(len(f.prefix)) + f.n + int64(len(f.suffix)) }

func (f *filler) Read(p []byte) (int, error) {
	var k int
	for k < len(p) {
		off := f.read + int64(k)
		switch {
		case off < int64(len(f.prefix)):
			k += copy(p[k:], f.prefix[off:])
		case off < int64(len(f.prefix))+f.n:
			m := min(int64(len(p)-k), int64(len(f.prefix))+f.n-off)
			for i := range m {
				p[k+int(i)] = 'a'
			}
			k += int(m)
		case off < f.size():
			k += copy(p[k:], f.suffix[off-int64(len(f.prefix))-f.n:])
		default:
			f.read += int64(k)
			if k == 0 {
				return 0, io.EOF
			}
			return k, nil
		}
	}
	f.read += int64(k)
	return k, nil
}

// post sends body to procedure and returns the RPC's code: a Connect
// error's code, or a gRPC status as its name ("ok" on success).
func post(t *testing.T, c *http.Client, url, procedure, contentType string, body io.Reader, length int64) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+procedure, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", contentType)
	if contentType == "application/grpc" {
		req.Header.Set("TE", "trailers")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", procedure, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if contentType == "application/grpc" {
		status := resp.Header.Get("Grpc-Status") + resp.Trailer.Get("Grpc-Status")
		return map[string]string{"0": "ok", "8": "resource_exhausted", "3": "invalid_argument"}[status] + status
	}
	if resp.StatusCode == http.StatusOK {
		return "ok"
	}
	var e struct{ Code string }
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("%s: status %d, body %.200q", procedure, resp.StatusCode, data)
	}
	return e.Code
}

// TestOversizedRequestIsRefusedUnread: a 100 MiB SubmitJob, as Connect
// JSON and as gRPC, with and without a Content-Length, is refused with
// resource_exhausted; the server neither buffers it (its allocations grow
// by far less than 100 MiB) nor reads it to its end.
func TestOversizedRequestIsRefusedUnread(t *testing.T) {
	url, token := serveOnLoopback(t)
	c := auth.WithBearer(h2c(), token)
	const size = 100 << 20
	grpcBody := func() *filler {
		// SubmitJobRequest{spec: JobSpec{script: size bytes}}, in a gRPC frame.
		script := binary.AppendUvarint([]byte{0x1a}, size)
		spec := binary.AppendUvarint([]byte{0x0a}, uint64(len(script))+size)
		prefix := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(spec)+len(script))+size)
		return &filler{prefix: append(append(prefix, spec...), script...), n: size}
	}
	jsonBody := func() *filler {
		return &filler{prefix: []byte(`{"spec":{"script":"`), n: size, suffix: []byte(`"}}`)}
	}
	for _, tc := range []struct {
		name, contentType string
		body              func() *filler
	}{
		{"connect json", "application/json", jsonBody},
		{"grpc", "application/grpc", grpcBody},
	} {
		for _, withLength := range []bool{true, false} {
			body := tc.body()
			length := int64(-1)
			if withLength {
				length = body.size()
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			code := post(t, c, url, hodeiv1connect.JobServiceSubmitJobProcedure, tc.contentType, body, length)
			runtime.ReadMemStats(&after)
			name := fmt.Sprintf("%s, content-length %v", tc.name, withLength)
			if !strings.HasPrefix(code, "resource_exhausted") {
				t.Errorf("%s: code %q, want resource_exhausted", name, code)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 40<<20 {
				t.Errorf("%s: %d MiB allocated for a refused request", name, grew>>20)
			}
			if body.read > 2*maxSubmitJob+(4<<20) {
				t.Errorf("%s: %d MiB of the body were sent, the limit is %d bytes", name, body.read>>20, maxSubmitJob)
			}
		}
	}
}

// escaped writes s as a JSON string with every byte escaped (\u00XX):
// the longest way to write it.
func escaped(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(b, `\u%04x`, s[i])
	}
	b.WriteByte('"')
}

// maximalSpec writes a JSON JobSpec with every string field at its limit,
// every byte escaped.
func maximalSpec(b *bytes.Buffer) {
	field := func(name, v string) {
		b.WriteString(`"` + name + `":`)
		escaped(b, v)
		b.WriteByte(',')
	}
	labels := func(name string) {
		b.WriteString(`"` + name + `":{`)
		for i := range job.MaxLabels {
			if i > 0 {
				b.WriteByte(',')
			}
			escaped(b, fmt.Sprintf("%02d", i)+strings.Repeat("k", job.MaxLabelKeyLen-2))
			b.WriteByte(':')
			escaped(b, strings.Repeat("v", job.MaxLabelValueLen))
		}
		b.WriteString("},")
	}
	b.WriteByte('{')
	field("name", strings.Repeat("n", job.MaxNameLen))
	field("script", strings.Repeat("s", job.MaxScriptBytes))
	field("interpreter", "/"+strings.Repeat("i", job.MaxPathLen-1))
	field("image", strings.Repeat("m", job.MaxImageLen))
	field("workdir", "/"+strings.Repeat("w", job.MaxPathLen-1))
	field("type", strings.Repeat("t", job.MaxTypeLen))
	field("idempotency_key", strings.Repeat("k", job.MaxIdempotencyLen))
	labels("labels")
	labels("tags")
	b.WriteString(`"env":{`)
	per := job.MaxEnvBytes / job.MaxEnvVars
	for i := range job.MaxEnvVars {
		if i > 0 {
			b.WriteByte(',')
		}
		k := fmt.Sprintf("V%03d", i)
		escaped(b, k)
		b.WriteByte(':')
		escaped(b, strings.Repeat("e", per-len(k)))
	}
	b.WriteString("}}")
}

// TestLargestValidRequestsPass: a spec with every field at its limit,
// written in the longest JSON, is accepted by SubmitJob; 1,000 specs that
// fill SubmitJobs' 32 MiB are accepted, and a few more bytes are refused.
func TestLargestValidRequestsPass(t *testing.T) {
	url, token := serveOnLoopback(t)
	c := auth.WithBearer(h2c(), token)
	var b bytes.Buffer
	b.WriteString(`{"spec":`)
	maximalSpec(&b)
	b.WriteString(`}`)
	if b.Len() < maxSpecBytes-(96<<10) {
		t.Fatalf("the maximal spec is %d bytes, the bound %d: the test is not testing the bound", b.Len(), maxSpecBytes)
	}
	if code := post(t, c, url, hodeiv1connect.JobServiceSubmitJobProcedure, "application/json", bytes.NewReader(b.Bytes()), int64(b.Len())); code != "ok" {
		t.Errorf("SubmitJob of a maximal spec (%d bytes): %s", b.Len(), code)
	}
	batch := func(script int) *bytes.Buffer {
		var b bytes.Buffer
		b.WriteString(`{"specs":[`)
		for i := range 1000 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"script":"`)
			b.WriteString(strings.Repeat("s", script))
			b.WriteString(`"}`)
		}
		b.WriteString(`]}`)
		return &b
	}
	per := maxSubmitJobs/1000 - len(`{"script":""},`)
	for _, tc := range []struct {
		body *bytes.Buffer
		want string
	}{{batch(per), "ok"}, {batch(per + 1), "resource_exhausted"}} {
		n := tc.body.Len()
		if code := post(t, c, url, hodeiv1connect.JobServiceSubmitJobsProcedure, "application/json", tc.body, int64(n)); code != tc.want {
			t.Errorf("SubmitJobs of 1,000 specs in %d bytes (limit %d): %s, want %s", n, maxSubmitJobs, code, tc.want)
		}
	}
}

// TestOversizedWorkerFrameIsRefused: a worker stream's frame one byte
// over frame.MaxFrameBytes ends the stream with resource_exhausted: the
// server reads it only to discard it, without holding or decoding it.
func TestOversizedWorkerFrameIsRefused(t *testing.T) {
	url, _ := serveOnLoopback(t)
	// ConnectRequest{logs: LogBatch{job_id: n bytes}}, in a gRPC frame,
	// frame.MaxFrameBytes+1 bytes long.
	size := uint64(frame.MaxFrameBytes + 1)
	n := size - 10
	id := binary.AppendUvarint([]byte{0x2a}, n)
	logs := binary.AppendUvarint([]byte{0x22}, uint64(len(id))+n)
	if got := uint64(len(logs)+len(id)) + n; got != size {
		t.Fatalf("frame of %d bytes, want %d", got, size)
	}
	prefix := binary.BigEndian.AppendUint32([]byte{0}, uint32(size))
	body := &filler{prefix: append(append(prefix, logs...), id...), n: int64(n)}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	code := post(t, h2c(), url, hodeiv1connect.WorkerServiceConnectProcedure, "application/grpc", body, -1)
	runtime.ReadMemStats(&after)
	if !strings.HasPrefix(code, "resource_exhausted") {
		t.Errorf("code %q, want resource_exhausted", code)
	}
	// Holding the frame would allocate at least its size; passing it
	// through the HTTP/2 buffers to be discarded allocates less.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > frame.MaxFrameBytes {
		t.Errorf("%d MiB allocated for a refused frame of %d MiB", grew>>20, size>>20)
	}
}
