package server

import (
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// TestReportsNameTheirJob: an agent's reports carry the attempt's job id
// with its token; a report without a valid job id is refused with an
// InvalidArgument error naming the field.
func TestReportsNameTheirJob(t *testing.T) {
	id := uuid.New()
	good := []*hodeiv1.ConnectRequest{
		{Msg: &hodeiv1.ConnectRequest_Started{Started: &hodeiv1.AttemptStarted{JobId: id.String(), FencingToken: 7}}},
		{Msg: &hodeiv1.ConnectRequest_Logs{Logs: &hodeiv1.LogBatch{JobId: id.String(), FencingToken: 7, Seq: 1, Lines: []*hodeiv1.LogLine{{Data: []byte("x")}}}}},
		{Msg: &hodeiv1.ConnectRequest_Finished{Finished: &hodeiv1.AttemptFinished{JobId: id.String(), FencingToken: 7, ExitCode: 3}}},
	}
	for i, m := range good {
		r, n, err := toReport(m)
		if err != nil || r.JobID != id || r.Token != 7 {
			t.Fatalf("report %d: %+v %v, want job %s token 7", i, r, err, id)
		}
		if (r.Logs != nil) != (i == 1) || (r.Logs != nil && (r.Logs.JobID != id || n != 1)) {
			t.Errorf("report %d: logs %+v, %d lines", i, r.Logs, n)
		}
	}
	for field, m := range map[string]*hodeiv1.ConnectRequest{
		"started.job_id":  {Msg: &hodeiv1.ConnectRequest_Started{Started: &hodeiv1.AttemptStarted{FencingToken: 7}}},
		"logs.job_id":     {Msg: &hodeiv1.ConnectRequest_Logs{Logs: &hodeiv1.LogBatch{JobId: "job-1", FencingToken: 7}}},
		"finished.job_id": {Msg: &hodeiv1.ConnectRequest_Finished{Finished: &hodeiv1.AttemptFinished{JobId: id.String() + "x", FencingToken: 7}}},
	} {
		_, _, err := toReport(m)
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.Contains(err.Error(), field) {
			t.Errorf("%s missing or wrong: err = %v, want InvalidArgument naming the field", field, err)
		}
	}
}
