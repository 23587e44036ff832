package jobpb

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
)

// TestStatesRoundTrip: every state has an enum of its own, and every enum
// but UNSPECIFIED names a state.
func TestStatesRoundTrip(t *testing.T) {
	roundTrip(t, job.States, "", hodeiv1.JobState_name, StateToProto, StateFromProto)
}

// TestFailureClassesRoundTrip: every failure class has an enum of its own,
// FailureNone is UNSPECIFIED, and every other enum names a class.
func TestFailureClassesRoundTrip(t *testing.T) {
	fromProto := func(p hodeiv1.FailureClass) (job.FailureClass, bool) {
		c := ClassFromProto(p)
		return c, c != job.FailureNone
	}
	roundTrip(t, job.FailureClasses, job.FailureNone, hodeiv1.FailureClass_name, ClassToProto, fromProto)
}

// roundTrip checks a domain enumeration (every value, and none, its zero
// value) against its proto enum (every name, 0 being UNSPECIFIED).
func roundTrip[D ~string, P ~int32](t *testing.T, values []D, none D, names map[int32]string, toProto func(D) P, fromProto func(P) (D, bool)) {
	t.Helper()
	seen := map[P]D{}
	for _, v := range values {
		p := toProto(v)
		if p == 0 {
			t.Errorf("%q maps to UNSPECIFIED", v)
		}
		if other, ok := seen[p]; ok {
			t.Errorf("%q and %q both map to %v", other, v, p)
		}
		seen[p] = v
		if back, ok := fromProto(p); !ok || back != v {
			t.Errorf("%q -> %v -> %q, %v", v, p, back, ok)
		}
	}
	for n := range names {
		p := P(n)
		v, ok := fromProto(p)
		if want := p != 0; ok != want {
			t.Errorf("%s maps to %q, %v; want a value: %v", names[n], v, ok, want)
		}
	}
	if p := toProto(none); p != 0 {
		t.Errorf("%q maps to %v, not UNSPECIFIED", none, p)
	}
}

// TestSpecRoundTrip: every field of a spec survives the message.
func TestSpecRoundTrip(t *testing.T) {
	for _, s := range []job.Spec{
		{Command: []string{"true"}},
		{Name: "n", Script: "echo hi", Interpreter: "/bin/bash", Image: "alpine:3", Env: map[string]string{"A": "1"}, Workdir: "/tmp",
			Labels: map[string]string{"gpu": "yes"}, CPUMillis: 500, MemoryMiB: 64, Timeout: time.Minute, Priority: -3, Type: "build",
			IdempotencyKey: "k", Tags: map[string]string{"team": "a"}, MergeOutput: true,
			Retry: job.RetryPolicy{MaxAttempts: 4, InitialBackoff: time.Second, MaxBackoff: time.Minute, Jitter: 0.5,
				RetryableClasses: []job.FailureClass{job.FailureTimeout, job.FailureWorkerLost}, RetryableExitCodes: []int32{3, 4}}},
	} {
		back, err := SpecFromProto(SpecToProto(s))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s, back, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("spec round trip (-want +got):\n%s", diff)
		}
	}
}

func TestSpecFromProtoRejects(t *testing.T) {
	for name, p := range map[string]*hodeiv1.JobSpec{
		"no spec":       nil,
		"bad timeout":   {Command: []string{"true"}, Timeout: &durationpb.Duration{Seconds: 1, Nanos: -1}},
		"unknown class": {Command: []string{"true"}, Retry: &hodeiv1.RetryPolicy{RetryableClasses: []hodeiv1.FailureClass{99}}},
		"unspecified":   {Command: []string{"true"}, Retry: &hodeiv1.RetryPolicy{RetryableClasses: []hodeiv1.FailureClass{0}}},
	} {
		var fe *job.FieldError
		if _, err := SpecFromProto(p); !errors.As(err, &fe) {
			t.Errorf("%s: err = %v, want a field error", name, err)
		}
	}
}

func TestJobToProto(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	j := job.Job{ID: "id", Spec: job.Spec{Command: []string{"false"}}, State: job.StateRetrying, Attempt: 1, MaxAttempts: 2,
		CreatedAt: at, UpdatedAt: at.Add(time.Second), RunAt: at.Add(time.Minute), ExitCode: 1, FailureClass: job.FailureExitCode, Message: "m",
		Attempts: []job.Attempt{{Number: 1, WorkerID: "w", Token: 7, State: job.StateFailed, AssignedAt: at, StartedAt: at.Add(time.Millisecond),
			FinishedAt: at.Add(time.Second), ExitCode: 1, FailureClass: job.FailureExitCode, Message: "m"}}}
	want := &hodeiv1.Job{Id: "id", Spec: &hodeiv1.JobSpec{Command: []string{"false"}}, State: hodeiv1.JobState_JOB_STATE_RETRYING, Attempt: 1, MaxAttempts: 2,
		CreatedAt: timestamppb.New(at), UpdatedAt: timestamppb.New(at.Add(time.Second)), RunAt: timestamppb.New(at.Add(time.Minute)), ExitCode: 1,
		FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE, Message: "m",
		Attempts: []*hodeiv1.Attempt{{Number: 1, WorkerId: "w", FencingToken: 7, State: hodeiv1.JobState_JOB_STATE_FAILED, AssignedAt: timestamppb.New(at),
			StartedAt: timestamppb.New(at.Add(time.Millisecond)), FinishedAt: timestamppb.New(at.Add(time.Second)), ExitCode: 1,
			FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE, Message: "m"}}}
	if diff := cmp.Diff(want, JobToProto(j), protocmp.Transform()); diff != "" {
		t.Errorf("JobToProto (-want +got):\n%s", diff)
	}
}
