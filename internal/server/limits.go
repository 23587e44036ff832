package server

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/frame"
	"github.com/hodei-dev/hodei/internal/job"
)

// Read limits. Every request is refused with resource_exhausted beyond
// the largest valid one of its RPC, before it is buffered.
//
// maxSpecBytes bounds a valid JobSpec in any encoding (docs/jobs.md). Its
// strings hold at most
//
//	name 200 + script 1,048,576 (a command is smaller: 131,072 + 1000
//	arguments' framing) + interpreter 4,096 + image 255 + env 131,072
//	+ workdir 4,096 + labels 32 × (63 + 255) = 10,176 + tags 10,176
//	+ type 63 + idempotency_key 255 = 1,208,965 bytes.
//
// Protobuf adds a few bytes of framing per field; JSON may write any byte
// of a string as \u00XX, six bytes: 7,253,790. The rest (field names,
// punctuation, 256 env variables and 64 labels and tags of 6 bytes of
// quotes each, 255 retryable exit codes, numbers, durations, JSON that
// escapes its numbers) stays under 64 KiB: 7,319,326 bytes, 7 MiB.
const maxSpecBytes = 6*(job.MaxNameLen+job.MaxScriptBytes+2*job.MaxPathLen+job.MaxImageLen+job.MaxEnvBytes+
	2*job.MaxLabels*(job.MaxLabelKeyLen+job.MaxLabelValueLen)+job.MaxTypeLen+job.MaxIdempotencyLen) + 64<<10

// Per RPC:
const (
	// SubmitJob: one spec and 16 bytes of framing.
	maxSubmitJob = maxSpecBytes + 1<<10
	// SubmitJobs: up to 1,000 specs, but at most 32 MiB in all (docs/jobs.md).
	// 1,000 specs of 7 MiB would be 7 GiB, over the 1 GiB PostgreSQL takes
	// in one statement: no such batch was ever storable.
	maxSubmitJobs = 32 << 20
	// Every other request holds ids, names, filters and labels: the largest,
	// ListJobs' and CreateWebhook's 32 labels, 10,176 bytes, 61,056 as
	// escaped JSON; a webhook's URL (2 KiB) and secret (1 KiB); a replay's
	// event ids (1,000 listed of 20 digits); a job type's name and retry
	// policy (255 exit codes at most). 1 MiB holds any of them.
	maxOther = 1 << 20
	// A worker stream's messages: one frame (internal/frame).
	maxWorkerFrame = frame.MaxFrameBytes
)

// readMaxBytes returns the read limit of a procedure.
func readMaxBytes(procedure string) int {
	switch procedure {
	case hodeiv1connect.JobServiceSubmitJobProcedure:
		return maxSubmitJob
	case hodeiv1connect.JobServiceSubmitJobsProcedure:
		return maxSubmitJobs
	case hodeiv1connect.WorkerServiceConnectProcedure:
		return maxWorkerFrame
	}
	return maxOther
}

// readLimits is the handler option that sets every procedure's read limit
// on its messages.
var readLimits = connect.WithConditionalHandlerOptions(func(spec connect.Spec) []connect.HandlerOption {
	return []connect.HandlerOption{connect.WithReadMaxBytes(readMaxBytes(spec.Procedure))}
})

// limitBodies bounds the body of every request that sends one message
// (all but the worker stream): connect's own limit stops buffering at the
// limit but then reads the rest of the body to throw it away, however long
// it is. A body announced longer than its limit is not read at all; one
// without a length is cut at the limit. Either way connect answers
// resource_exhausted.
func limitBodies(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != hodeiv1connect.WorkerServiceConnectProcedure {
			// Compressed data may be slightly larger than the message;
			// gRPC frames it in 5 bytes.
			n := int64(readMaxBytes(r.URL.Path))
			n += n/64 + 1<<10
			if r.ContentLength > n {
				n = 0
			}
			r.Body = http.MaxBytesReader(w, r.Body, n)
		}
		h.ServeHTTP(w, r)
	})
}
