package server

import (
	"context"
	"encoding/base64"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/jobpb"
)

// ListJobHistory tells a job's history from the job and its attempts
// (job.History), read by primary key. The event log is not read: its
// events are elements of batch rows indexed only by position, so one
// job's events would be a scan of every batch written in the job's
// lifetime, and they are pruned long before the job is.
func (h jobService) ListJobHistory(ctx context.Context, req *connect.Request[hodeiv1.ListJobHistoryRequest]) (*connect.Response[hodeiv1.ListJobHistoryResponse], error) {
	m := req.Msg
	size := int(m.PageSize)
	switch {
	case size < 0:
		return nil, connectError(&job.FieldError{Field: "page_size", Rule: "must not be negative"})
	case size == 0:
		size = 100
	case size > 1000:
		size = 1000
	}
	var after *job.HistoryKey
	if m.PageToken != "" {
		k, err := decodeHistoryToken(m.PageToken)
		if err != nil {
			return nil, connectError(&job.FieldError{Field: "page_token", Rule: "is not a token returned by ListJobHistory"})
		}
		after = &k
	}
	j, err := h.s.store.GetJob(ctx, m.Id)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListJobHistoryResponse{ResumeToken: m.PageToken}
	for _, e := range job.History(j) {
		if after != nil && !after.Less(e.Key()) {
			continue
		}
		if len(resp.Entries) == size {
			resp.NextPageToken = resp.ResumeToken
			break
		}
		resp.Entries = append(resp.Entries, historyToProto(e))
		resp.ResumeToken = encodeHistoryToken(e.Key())
	}
	return connect.NewResponse(resp), nil
}

// stepTypes names each step by the event that announces it.
var stepTypes = map[job.Step]string{
	job.StepCreated:   "JobCreated",
	job.StepAssigned:  "JobAssigned",
	job.StepStarted:   "JobStarted",
	job.StepCancelled: "JobCancelled",
}

func historyToProto(e job.HistoryEntry) *hodeiv1.JobHistoryEntry {
	typ := stepTypes[e.Step]
	if e.Step == job.StepEnded {
		switch e.State {
		case job.StateSucceeded:
			typ = "JobCompleted"
		case job.StateCancelled:
			typ = "JobCancelled"
		default:
			typ = "JobFailed"
		}
	}
	out := &hodeiv1.JobHistoryEntry{Time: timestamppb.New(e.Time), Type: typ, Attempt: int32(e.Attempt), WorkerId: e.WorkerID,
		ExitCode: int32(e.ExitCode), Signal: e.Signal, FailureClass: jobpb.ClassToProto(e.Class), Message: e.Message}
	if e.State != "" {
		out.State = jobpb.StateToProto(e.State)
	}
	return out
}

func encodeHistoryToken(k job.HistoryKey) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "h1|%d|%d", k.Attempt, k.Step))
}

func decodeHistoryToken(s string) (job.HistoryKey, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return job.HistoryKey{}, err
	}
	var k job.HistoryKey
	var step int
	if _, err := fmt.Sscanf(string(b), "h1|%d|%d", &k.Attempt, &step); err != nil {
		return job.HistoryKey{}, err
	}
	if k.Attempt < 0 || step < int(job.StepCreated) || step > int(job.StepCancelled) {
		return job.HistoryKey{}, fmt.Errorf("history token out of range")
	}
	k.Step = job.Step(step)
	return k, nil
}
