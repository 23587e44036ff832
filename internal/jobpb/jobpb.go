// Package jobpb holds the proto forms of the domain types: job states,
// failure classes, specs and jobs to and from their hodei.v1 messages. The
// server answers with them and the store publishes events with them, both
// through this one mapping.
package jobpb

import (
	"fmt"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
)

// StateToProto is the enum of s; JOB_STATE_UNSPECIFIED for no state.
func StateToProto(s job.State) hodeiv1.JobState {
	switch s {
	case job.StateQueued:
		return hodeiv1.JobState_JOB_STATE_QUEUED
	case job.StateAssigned:
		return hodeiv1.JobState_JOB_STATE_ASSIGNED
	case job.StateRunning:
		return hodeiv1.JobState_JOB_STATE_RUNNING
	case job.StateSucceeded:
		return hodeiv1.JobState_JOB_STATE_SUCCEEDED
	case job.StateFailed:
		return hodeiv1.JobState_JOB_STATE_FAILED
	case job.StateCancelled:
		return hodeiv1.JobState_JOB_STATE_CANCELLED
	case job.StateTimedOut:
		return hodeiv1.JobState_JOB_STATE_TIMED_OUT
	case job.StateRetrying:
		return hodeiv1.JobState_JOB_STATE_RETRYING
	}
	return hodeiv1.JobState_JOB_STATE_UNSPECIFIED
}

// StateFromProto is the state of enum s; false when s names none.
func StateFromProto(s hodeiv1.JobState) (job.State, bool) {
	for _, st := range job.States {
		if StateToProto(st) == s {
			return st, true
		}
	}
	return "", false
}

// ClassToProto is the enum of c; FAILURE_CLASS_UNSPECIFIED for FailureNone.
func ClassToProto(c job.FailureClass) hodeiv1.FailureClass {
	switch c {
	case job.FailureExitCode:
		return hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE
	case job.FailureTimeout:
		return hodeiv1.FailureClass_FAILURE_CLASS_TIMEOUT
	case job.FailureWorkerLost:
		return hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST
	case job.FailureProvisioning:
		return hodeiv1.FailureClass_FAILURE_CLASS_PROVISIONING
	case job.FailureCancelled:
		return hodeiv1.FailureClass_FAILURE_CLASS_CANCELLED
	case job.FailureInvalid:
		return hodeiv1.FailureClass_FAILURE_CLASS_INVALID
	}
	return hodeiv1.FailureClass_FAILURE_CLASS_UNSPECIFIED
}

// ClassFromProto is the failure class of enum c; FailureNone when c names
// none.
func ClassFromProto(c hodeiv1.FailureClass) job.FailureClass {
	for _, fc := range job.FailureClasses {
		if ClassToProto(fc) == c {
			return fc
		}
	}
	return job.FailureNone
}

// SpecFromProto converts p and validates nothing; job.Spec.Validate does.
func SpecFromProto(p *hodeiv1.JobSpec) (job.Spec, error) {
	if p == nil {
		return job.Spec{}, &job.FieldError{Field: "spec", Rule: "is required"}
	}
	s := job.Spec{Name: p.Name, Command: p.Command, Script: p.Script, Interpreter: p.Interpreter, Image: p.Image, Env: p.Env,
		Workdir: p.Workdir, Labels: p.Labels, Priority: p.Priority, Type: p.Type, IdempotencyKey: p.IdempotencyKey, Tags: p.Tags,
		MergeOutput: p.MergeOutput}
	for _, r := range p.Secrets {
		s.Secrets = append(s.Secrets, job.SecretRef{Name: r.Name, Env: r.Env})
	}
	if p.Resources != nil {
		s.CPUMillis, s.MemoryMiB = p.Resources.CpuMillis, p.Resources.MemoryMib
	}
	if p.Timeout != nil {
		if err := p.Timeout.CheckValid(); err != nil {
			return s, &job.FieldError{Field: "timeout", Rule: err.Error()}
		}
		s.Timeout = p.Timeout.AsDuration()
	}
	if p.Retry != nil {
		r, err := RetryFromProto(p.Retry)
		if err != nil {
			return s, err
		}
		s.Retry = r
	}
	return s, nil
}

// SpecToProto is the message of s.
func SpecToProto(s job.Spec) *hodeiv1.JobSpec {
	p := &hodeiv1.JobSpec{Name: s.Name, Command: s.Command, Script: s.Script, Interpreter: s.Interpreter, Image: s.Image, Env: s.Env,
		Workdir: s.Workdir, Labels: s.Labels, Priority: s.Priority, Type: s.Type, IdempotencyKey: s.IdempotencyKey, Tags: s.Tags,
		MergeOutput: s.MergeOutput}
	for _, r := range s.Secrets {
		p.Secrets = append(p.Secrets, &hodeiv1.SecretRef{Name: r.Name, Env: r.Env})
	}
	if s.CPUMillis != 0 || s.MemoryMiB != 0 {
		p.Resources = &hodeiv1.Resources{CpuMillis: s.CPUMillis, MemoryMib: s.MemoryMiB}
	}
	if s.Timeout != 0 {
		p.Timeout = durationpb.New(s.Timeout)
	}
	if !s.Retry.IsZero() {
		p.Retry = RetryToProto(s.Retry)
	}
	return p
}

// RetryFromProto converts r (not nil) and validates nothing but its
// failure classes; job.RetryPolicy.Validate does.
func RetryFromProto(r *hodeiv1.RetryPolicy) (job.RetryPolicy, error) {
	out := job.RetryPolicy{MaxAttempts: int(r.MaxAttempts), Jitter: r.Jitter, RetryableExitCodes: r.RetryableExitCodes}
	if r.InitialBackoff != nil {
		out.InitialBackoff = r.InitialBackoff.AsDuration()
	}
	if r.MaxBackoff != nil {
		out.MaxBackoff = r.MaxBackoff.AsDuration()
	}
	for _, c := range r.RetryableClasses {
		fc := ClassFromProto(c)
		if fc == job.FailureNone {
			return out, &job.FieldError{Field: "retry.retryable_classes", Rule: fmt.Sprintf("%s is not a failure class", c)}
		}
		out.RetryableClasses = append(out.RetryableClasses, fc)
	}
	return out, nil
}

// RetryToProto is the message of r.
func RetryToProto(r job.RetryPolicy) *hodeiv1.RetryPolicy {
	p := &hodeiv1.RetryPolicy{MaxAttempts: int32(r.MaxAttempts), Jitter: r.Jitter, RetryableExitCodes: r.RetryableExitCodes}
	if r.InitialBackoff != 0 {
		p.InitialBackoff = durationpb.New(r.InitialBackoff)
	}
	if r.MaxBackoff != 0 {
		p.MaxBackoff = durationpb.New(r.MaxBackoff)
	}
	for _, c := range r.RetryableClasses {
		p.RetryableClasses = append(p.RetryableClasses, ClassToProto(c))
	}
	return p
}

// JobToProto is the message of j, with its attempts.
func JobToProto(j job.Job) *hodeiv1.Job {
	p := &hodeiv1.Job{Id: j.ID, Spec: SpecToProto(j.Spec), State: StateToProto(j.State), Attempt: int32(j.Attempt), MaxAttempts: int32(j.MaxAttempts),
		CreatedAt: timestamppb.New(j.CreatedAt), UpdatedAt: timestamppb.New(j.UpdatedAt), ExitCode: int32(j.ExitCode),
		FailureClass: ClassToProto(j.FailureClass), Message: j.Message, SubmittedBy: j.SubmittedBy}
	if !j.FinishedAt.IsZero() {
		p.FinishedAt = timestamppb.New(j.FinishedAt)
	}
	if !j.RunAt.IsZero() {
		p.RunAt = timestamppb.New(j.RunAt)
	}
	for _, a := range j.Attempts {
		pa := &hodeiv1.Attempt{Number: int32(a.Number), WorkerId: a.WorkerID, FencingToken: a.Token, State: StateToProto(a.State),
			AssignedAt: timestamppb.New(a.AssignedAt), ExitCode: int32(a.ExitCode), Signal: a.Signal, FailureClass: ClassToProto(a.FailureClass), Message: a.Message}
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
