package server

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
)

// connectError maps domain errors to RPC codes: the one place that does.
func connectError(err error) error {
	var fe *job.FieldError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return connect.NewError(connect.CodeInvalidArgument, fe)
	case errors.Is(err, job.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, job.ErrConflict):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, job.ErrStale):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, store.ErrUnauthenticated):
		return connect.NewError(connect.CodeUnauthenticated, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

var stateToProto = map[job.State]hodeiv1.JobState{
	job.StateQueued: hodeiv1.JobState_JOB_STATE_QUEUED, job.StateAssigned: hodeiv1.JobState_JOB_STATE_ASSIGNED,
	job.StateRunning: hodeiv1.JobState_JOB_STATE_RUNNING, job.StateSucceeded: hodeiv1.JobState_JOB_STATE_SUCCEEDED,
	job.StateFailed: hodeiv1.JobState_JOB_STATE_FAILED, job.StateCancelled: hodeiv1.JobState_JOB_STATE_CANCELLED,
	job.StateTimedOut: hodeiv1.JobState_JOB_STATE_TIMED_OUT, job.StateRetrying: hodeiv1.JobState_JOB_STATE_RETRYING,
}

var classToProto = map[job.FailureClass]hodeiv1.FailureClass{
	job.FailureExitCode: hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE, job.FailureTimeout: hodeiv1.FailureClass_FAILURE_CLASS_TIMEOUT,
	job.FailureWorkerLost: hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST, job.FailureProvisioning: hodeiv1.FailureClass_FAILURE_CLASS_PROVISIONING,
	job.FailureCancelled: hodeiv1.FailureClass_FAILURE_CLASS_CANCELLED, job.FailureInvalid: hodeiv1.FailureClass_FAILURE_CLASS_INVALID,
}

func classFromProto(c hodeiv1.FailureClass) job.FailureClass {
	for k, v := range classToProto {
		if v == c {
			return k
		}
	}
	return job.FailureNone
}

func stateFromProto(s hodeiv1.JobState) (job.State, bool) {
	for k, v := range stateToProto {
		if v == s {
			return k, true
		}
	}
	return "", false
}

// specFromProto converts and validates nothing; job.Spec.Validate does.
func specFromProto(p *hodeiv1.JobSpec) (job.Spec, error) {
	if p == nil {
		return job.Spec{}, &job.FieldError{Field: "spec", Rule: "is required"}
	}
	s := job.Spec{Name: p.Name, Command: p.Command, Script: p.Script, Interpreter: p.Interpreter, Image: p.Image, Env: p.Env,
		Workdir: p.Workdir, Labels: p.Labels, Priority: p.Priority, Type: p.Type, IdempotencyKey: p.IdempotencyKey, Tags: p.Tags}
	if p.Resources != nil {
		s.CPUMillis, s.MemoryMiB = p.Resources.CpuMillis, p.Resources.MemoryMib
	}
	if p.Timeout != nil {
		if err := p.Timeout.CheckValid(); err != nil {
			return s, &job.FieldError{Field: "timeout", Rule: err.Error()}
		}
		s.Timeout = p.Timeout.AsDuration()
	}
	if r := p.Retry; r != nil {
		s.Retry = job.RetryPolicy{MaxAttempts: int(r.MaxAttempts), Jitter: r.Jitter, RetryableExitCodes: r.RetryableExitCodes}
		if r.InitialBackoff != nil {
			s.Retry.InitialBackoff = r.InitialBackoff.AsDuration()
		}
		if r.MaxBackoff != nil {
			s.Retry.MaxBackoff = r.MaxBackoff.AsDuration()
		}
		for _, c := range r.RetryableClasses {
			fc := classFromProto(c)
			if fc == job.FailureNone {
				return s, &job.FieldError{Field: "retry.retryable_classes", Rule: fmt.Sprintf("%s is not a failure class", c)}
			}
			s.Retry.RetryableClasses = append(s.Retry.RetryableClasses, fc)
		}
	}
	return s, nil
}

func specToProto(s job.Spec) *hodeiv1.JobSpec {
	p := &hodeiv1.JobSpec{Name: s.Name, Command: s.Command, Script: s.Script, Interpreter: s.Interpreter, Image: s.Image, Env: s.Env,
		Workdir: s.Workdir, Labels: s.Labels, Priority: s.Priority, Type: s.Type, IdempotencyKey: s.IdempotencyKey, Tags: s.Tags}
	if s.CPUMillis != 0 || s.MemoryMiB != 0 {
		p.Resources = &hodeiv1.Resources{CpuMillis: s.CPUMillis, MemoryMib: s.MemoryMiB}
	}
	if s.Timeout != 0 {
		p.Timeout = durationpb.New(s.Timeout)
	}
	r := s.Retry
	if r.MaxAttempts != 0 || r.InitialBackoff != 0 || r.MaxBackoff != 0 || r.Jitter != 0 || len(r.RetryableClasses) > 0 || len(r.RetryableExitCodes) > 0 {
		p.Retry = &hodeiv1.RetryPolicy{MaxAttempts: int32(r.MaxAttempts), Jitter: r.Jitter, RetryableExitCodes: r.RetryableExitCodes}
		if r.InitialBackoff != 0 {
			p.Retry.InitialBackoff = durationpb.New(r.InitialBackoff)
		}
		if r.MaxBackoff != 0 {
			p.Retry.MaxBackoff = durationpb.New(r.MaxBackoff)
		}
		for _, c := range r.RetryableClasses {
			p.Retry.RetryableClasses = append(p.Retry.RetryableClasses, classToProto[c])
		}
	}
	return p
}

func jobToProto(j job.Job) *hodeiv1.Job {
	p := &hodeiv1.Job{Id: j.ID, Spec: specToProto(j.Spec), State: stateToProto[j.State], Attempt: int32(j.Attempt), MaxAttempts: int32(j.MaxAttempts),
		CreatedAt: timestamppb.New(j.CreatedAt), UpdatedAt: timestamppb.New(j.UpdatedAt), ExitCode: int32(j.ExitCode),
		FailureClass: classToProto[j.FailureClass], Message: j.Message}
	if !j.FinishedAt.IsZero() {
		p.FinishedAt = timestamppb.New(j.FinishedAt)
	}
	if !j.RunAt.IsZero() {
		p.RunAt = timestamppb.New(j.RunAt)
	}
	for _, a := range j.Attempts {
		pa := &hodeiv1.Attempt{Number: int32(a.Number), WorkerId: a.WorkerID, FencingToken: a.Token, State: stateToProto[a.State],
			AssignedAt: timestamppb.New(a.AssignedAt), ExitCode: int32(a.ExitCode), Signal: a.Signal, FailureClass: classToProto[a.FailureClass], Message: a.Message}
		if !a.StartedAt.IsZero() {
			pa.StartedAt = timestamppb.New(a.StartedAt)
		}
		if !a.FinishedAt.IsZero() {
			pa.FinishedAt = timestamppb.New(a.FinishedAt)
		}
		p.Attempts = append(p.Attempts, pa)
	}
	return p
}
