package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/jobpb"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/tracing"
)

type jobService struct{ s *Server }

func (h jobService) SubmitJob(ctx context.Context, req *connect.Request[hodeiv1.SubmitJobRequest]) (*connect.Response[hodeiv1.SubmitJobResponse], error) {
	spec, err := jobpb.SpecFromProto(req.Msg.Spec)
	if err != nil {
		return nil, connectError(err)
	}
	if len(spec.Secrets) > 0 {
		if err := h.s.checkSecrets(ctx, []job.Spec{spec}, func(int) string { return "spec." }); err != nil {
			return nil, err
		}
	}
	begin := time.Now()
	j, existing, err := h.s.store.CreateJobAs(ctx, caller(ctx), spec, h.s.cfg.DefaultMaxAttempts)
	if err != nil {
		return nil, connectError(err)
	}
	if !existing && h.s.cfg.Tracer.Enabled() {
		// In the first attempt's trace, linked to the caller's.
		_, sp := h.s.cfg.Tracer.Span(tracing.Attempt(ctx, j.ID, 1), "submit", begin, attribute.String("hodei.job_id", j.ID), attribute.String("hodei.type", spec.Type))
		sp.AddLink(trace.LinkFromContext(ctx))
		sp.End()
	}
	if !existing {
		h.s.metrics.jobsCreated.WithLabelValues(spec.Type).Inc()
		h.s.workers.created([]job.Job{j}) // this replica's dispatcher at once; the others by JobCreated
		h.s.log.Debug("job created", "job_id", j.ID, "type", spec.Type)
	}
	return connect.NewResponse(&hodeiv1.SubmitJobResponse{Job: jobpb.JobToProto(j), Existing: existing}), nil
}

// maxBatch bounds SubmitJobs.
const maxBatch = 1000

func (h jobService) SubmitJobs(ctx context.Context, req *connect.Request[hodeiv1.SubmitJobsRequest]) (*connect.Response[hodeiv1.SubmitJobsResponse], error) {
	if n := len(req.Msg.Specs); n == 0 || n > maxBatch {
		return nil, connectError(&job.FieldError{Field: "specs", Rule: fmt.Sprintf("must hold 1 to %d specs, got %d", maxBatch, n)})
	}
	specs := make([]job.Spec, len(req.Msg.Specs))
	for i, p := range req.Msg.Specs {
		sp, err := jobpb.SpecFromProto(p)
		var fe *job.FieldError
		if errors.As(err, &fe) {
			return nil, connectError(&job.FieldError{Field: fmt.Sprintf("specs[%d].%s", i, fe.Field), Rule: fe.Rule})
		} else if err != nil {
			return nil, connectError(err)
		}
		specs[i] = sp
	}
	if err := h.s.checkSecrets(ctx, specs, func(i int) string { return fmt.Sprintf("specs[%d].", i) }); err != nil {
		return nil, err
	}
	jobs, existing, err := h.s.store.CreateJobsAs(ctx, caller(ctx), specs, h.s.cfg.DefaultMaxAttempts)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.SubmitJobsResponse{Existing: existing}
	created := make([]job.Job, 0, len(jobs))
	for i, j := range jobs {
		resp.Jobs = append(resp.Jobs, jobpb.JobToProto(j))
		if !existing[i] {
			h.s.metrics.jobsCreated.WithLabelValues(j.Spec.Type).Inc()
			created = append(created, j)
		}
	}
	if len(created) > 0 {
		h.s.workers.created(created) // this replica's dispatcher at once; the others by JobCreated
	}
	return connect.NewResponse(resp), nil
}

func (h jobService) GetJob(ctx context.Context, req *connect.Request[hodeiv1.GetJobRequest]) (*connect.Response[hodeiv1.GetJobResponse], error) {
	j, err := h.s.store.GetJob(ctx, req.Msg.Id)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.GetJobResponse{Job: jobpb.JobToProto(j)}), nil
}

func (h jobService) ListJobs(ctx context.Context, req *connect.Request[hodeiv1.ListJobsRequest]) (*connect.Response[hodeiv1.ListJobsResponse], error) {
	m := req.Msg
	f := store.ListFilter{Labels: m.Labels, Type: m.Type, Text: m.Text, Limit: int(m.PageSize)}
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 100
	}
	for _, st := range m.States {
		s, ok := jobpb.StateFromProto(st)
		if !ok {
			return nil, connectError(&job.FieldError{Field: "states", Rule: fmt.Sprintf("%v is not a job state", st)})
		}
		f.States = append(f.States, s)
	}
	if m.CreatedAfter != nil {
		f.CreatedAfter = m.CreatedAfter.AsTime()
	}
	if m.CreatedBefore != nil {
		f.CreatedBefore = m.CreatedBefore.AsTime()
	}
	if m.PageToken != "" {
		// The token's time is no longer used (jobs are listed by id); it
		// stays in the format so that earlier tokens remain valid.
		_, id, err := decodePageToken(m.PageToken)
		if err != nil {
			return nil, connectError(&job.FieldError{Field: "page_token", Rule: "is not a token returned by ListJobs"})
		}
		f.AfterID = id
	}
	page, err := h.s.store.ListJobs(ctx, f)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListJobsResponse{}
	for _, j := range page.Jobs {
		resp.Jobs = append(resp.Jobs, jobpb.JobToProto(j))
	}
	if page.More {
		resp.NextPageToken = encodePageToken(page.Next.CreatedAt, page.Next.ID)
	}
	if page.Bounded {
		resp.SearchedTo = timestamppb.New(page.Next.CreatedAt)
	}
	return connect.NewResponse(resp), nil
}

func encodePageToken(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(t.UTC().Format(time.RFC3339Nano) + "|" + id))
}

func decodePageToken(s string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return time.Time{}, "", err
	}
	ts, id, ok := strings.Cut(string(b), "|")
	if !ok {
		return time.Time{}, "", fmt.Errorf("bad token")
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	return t, id, err
}

func (h jobService) CancelJob(ctx context.Context, req *connect.Request[hodeiv1.CancelJobRequest]) (*connect.Response[hodeiv1.CancelJobResponse], error) {
	res, err := h.s.store.CancelJob(ctx, req.Msg.Id, "cancelled by user")
	if err != nil {
		return nil, connectError(err)
	}
	// The worker running it hears of the JobCancelled event (Server.Run).
	h.s.log.Info("job cancelled", "job_id", res.Job.ID, "attempt", res.Job.Attempt, "worker_id", res.WorkerID)
	return connect.NewResponse(&hodeiv1.CancelJobResponse{Job: jobpb.JobToProto(res.Job)}), nil
}

func (h jobService) RetryJob(ctx context.Context, req *connect.Request[hodeiv1.RetryJobRequest]) (*connect.Response[hodeiv1.RetryJobResponse], error) {
	j, err := h.s.store.RetryJob(ctx, req.Msg.Id)
	if err != nil {
		return nil, connectError(err)
	}
	h.s.log.Info("job retried", "job_id", j.ID, "attempt", j.Attempt+1)
	return connect.NewResponse(&hodeiv1.RetryJobResponse{Job: jobpb.JobToProto(j)}), nil
}

// WatchJob sends the job now and again after every event about it.
func (h jobService) WatchJob(ctx context.Context, req *connect.Request[hodeiv1.WatchJobRequest], stream *connect.ServerStream[hodeiv1.WatchJobResponse]) error {
	from, err := h.s.bus.Now(ctx) // before the read: no change falls between
	if err != nil {
		return connectError(err)
	}
	j, err := h.s.store.GetJob(ctx, req.Msg.Id)
	if err != nil {
		return connectError(err)
	}
	if err := stream.Send(&hodeiv1.WatchJobResponse{Job: jobpb.JobToProto(j)}); err != nil {
		return err
	}
	if j.State.Final() {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	last := j.State
	errDone := fmt.Errorf("done")
	err = h.s.bus.TailFrom(ctx, from, eventbus.Filter{AggregateKind: "job", AggregateID: j.ID}, func(eventbus.Event) error {
		j, err := h.s.store.GetJob(ctx, j.ID)
		if err != nil {
			return err
		}
		if j.State != last {
			last = j.State
			if err := stream.Send(&hodeiv1.WatchJobResponse{Job: jobpb.JobToProto(j)}); err != nil {
				return err
			}
		}
		if j.State.Final() {
			return errDone
		}
		return nil
	})
	if err == errDone {
		return nil
	}
	return err
}

// GetJobLogs sends the stored history, then (follow) new batches as they
// are stored, reading the table after the last (attempt, seq) sent so that
// nothing is skipped or repeated. It ends when the job is final.
func (h jobService) GetJobLogs(ctx context.Context, req *connect.Request[hodeiv1.GetJobLogsRequest], stream *connect.ServerStream[hodeiv1.GetJobLogsResponse]) error {
	id := req.Msg.Id
	if _, err := h.s.store.GetJob(ctx, id); err != nil {
		return connectError(err)
	}
	if req.Msg.TailBytes < 0 {
		return connectError(&job.FieldError{Field: "tail_bytes", Rule: "must not be negative"})
	}
	before := store.LogEnd
	switch m := req.Msg; {
	case m.BeforeAttempt < 0 || m.BeforeSeq < 0:
		return connectError(&job.FieldError{Field: "before_attempt", Rule: "must not be negative"})
	case m.BeforeAttempt > 0 && m.Follow:
		return connectError(&job.FieldError{Field: "before_attempt", Rule: "ends the log: not with follow"})
	case m.BeforeAttempt > 0:
		before = store.LogPos{Attempt: int(m.BeforeAttempt), Seq: m.BeforeSeq}
	}
	wake, unsubscribe := h.s.logs.subscribe(id)
	defer unsubscribe()
	var attempt int
	var seq int64
	skipped := false
	if req.Msg.TailBytes > 0 {
		a, s, ok, err := h.s.store.LogTailStart(ctx, id, int(req.Msg.Attempt), before, req.Msg.TailBytes)
		if err != nil {
			return connectError(err)
		}
		// Read from that batch on: after the position just before it.
		if ok {
			attempt, seq, skipped = a, s-1, true
		}
	}
	for {
		// Check the state before reading: logs stored before the job
		// turned final are then certainly in the read that follows.
		j, err := h.s.store.GetJob(ctx, id)
		if err != nil {
			return connectError(err)
		}
		for {
			recs, err := h.s.store.ReadLogs(ctx, id, int(req.Msg.Attempt), store.LogPos{Attempt: attempt, Seq: seq}, before, 200)
			if err != nil {
				return connectError(err)
			}
			if len(recs) == 0 {
				break
			}
			resp := &hodeiv1.GetJobLogsResponse{Skipped: skipped}
			skipped = false
			for _, r := range recs {
				chunks, err := batchToChunks(r)
				if err != nil {
					return connectError(err)
				}
				resp.Chunks = append(resp.Chunks, chunks...)
				attempt, seq = r.Attempt, r.Seq
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		if !req.Msg.Follow {
			return nil
		}
		if j.State.Final() {
			return stream.Send(&hodeiv1.GetJobLogsResponse{Job: jobpb.JobToProto(j)})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}

// batchToChunks turns a stored batch into chunks of consecutive lines of
// one stream, with newlines restored.
func batchToChunks(r store.LogRecord) ([]*hodeiv1.LogChunk, error) {
	var b hodeiv1.LogBatch
	if err := proto.Unmarshal(r.Data, &b); err != nil {
		return nil, fmt.Errorf("decode log batch %d: %w", r.Seq, err)
	}
	var out []*hodeiv1.LogChunk
	var cur *hodeiv1.LogChunk
	for _, l := range b.Lines {
		if cur == nil || cur.Stream != l.Stream {
			cur = &hodeiv1.LogChunk{Attempt: int32(r.Attempt), Seq: r.Seq, Stream: l.Stream, Time: l.Time}
			if cur.Time == nil {
				cur.Time = timestamppb.New(r.Time)
			}
			out = append(out, cur)
		}
		cur.Data = append(cur.Data, l.Data...)
		if !l.Partial {
			cur.Data = append(cur.Data, '\n')
		}
	}
	if b.Dropped > 0 {
		out = append(out, &hodeiv1.LogChunk{Attempt: int32(r.Attempt), Seq: r.Seq, Stream: hodeiv1.LogStream_LOG_STREAM_SYSTEM,
			Data: fmt.Appendf(nil, "%d log lines dropped by the agent (backpressure)\n", b.Dropped), Time: timestamppb.New(r.Time)})
	}
	return out, nil
}
