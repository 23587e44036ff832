package job

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTransitions(t *testing.T) {
	allowed := map[[2]State]bool{}
	for _, p := range [][2]State{
		{StateQueued, StateAssigned}, {StateQueued, StateCancelled},
		{StateAssigned, StateRunning}, {StateAssigned, StateSucceeded}, {StateAssigned, StateFailed}, {StateAssigned, StateTimedOut},
		{StateAssigned, StateCancelled}, {StateAssigned, StateRetrying}, {StateAssigned, StateQueued},
		{StateRunning, StateSucceeded}, {StateRunning, StateFailed}, {StateRunning, StateTimedOut}, {StateRunning, StateCancelled}, {StateRunning, StateRetrying},
		{StateRetrying, StateQueued}, {StateRetrying, StateAssigned}, {StateRetrying, StateCancelled},
	} {
		allowed[p] = true
	}
	for _, from := range States {
		for _, to := range States {
			want := allowed[[2]State{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
			err := CheckTransition(from, to)
			if want != (err == nil) || (err != nil && !errors.Is(err, ErrConflict)) {
				t.Errorf("CheckTransition(%s, %s) = %v", from, to, err)
			}
		}
	}
	for _, s := range States {
		if s.Final() && len(transitions[s]) > 0 {
			t.Errorf("final state %s has transitions", s)
		}
	}
}

func TestBackoffSchedule(t *testing.T) {
	var p RetryPolicy
	want := []time.Duration{1, 2, 4, 8, 16, 32, 32, 32}
	for i, w := range want {
		w *= time.Second
		lo, hi := time.Duration(float64(w)*0.75), time.Duration(float64(w)*1.25)
		for _, r := range []float64{0, 0.5, 0.999999} {
			got := p.Backoff(i+1, func() float64 { return r })
			if got < lo || got > hi {
				t.Errorf("Backoff(%d, rnd=%v) = %s, want within [%s, %s]", i+1, r, got, lo, hi)
			}
		}
		if got := p.Backoff(i+1, func() float64 { return 0.5 }); got != w {
			t.Errorf("Backoff(%d) without jitter = %s, want %s", i+1, got, w)
		}
		for n := 0; n < 200; n++ { // real randomness stays in bounds
			if got := p.Backoff(i+1, nil); got < lo || got > hi {
				t.Fatalf("Backoff(%d) = %s, outside [%s, %s]", i+1, got, lo, hi)
			}
		}
	}
}

func TestRetryable(t *testing.T) {
	def := RetryPolicy{}
	codes := RetryPolicy{RetryableExitCodes: []int32{7}}
	for _, tc := range []struct {
		p     RetryPolicy
		class FailureClass
		code  int
		want  bool
	}{
		{def, FailureWorkerLost, -1, true},
		{def, FailureProvisioning, -1, true},
		{def, FailureTimeout, -1, true},
		{def, FailureExitCode, 1, false},
		{def, FailureInvalid, -1, false},
		{def, FailureCancelled, -1, false},
		{codes, FailureExitCode, 7, true},
		{codes, FailureExitCode, 8, false},
		{RetryPolicy{RetryableClasses: []FailureClass{FailureExitCode}}, FailureExitCode, 9, true},
		{RetryPolicy{RetryableClasses: []FailureClass{FailureTimeout}}, FailureWorkerLost, -1, false},
	} {
		if got := tc.p.Retryable(tc.class, tc.code); got != tc.want {
			t.Errorf("%+v.Retryable(%s, %d) = %v, want %v", tc.p, tc.class, tc.code, got, tc.want)
		}
	}
}

func TestValidateNamesTheField(t *testing.T) {
	ok := func() Spec { return Spec{Command: []string{"true"}} }
	for _, tc := range []struct {
		field string
		edit  func(*Spec)
	}{
		{"command", func(s *Spec) { s.Command = nil }},
		{"command", func(s *Spec) { s.Script = "echo" }},
		{"command[0]", func(s *Spec) { s.Command = []string{""} }},
		{"name", func(s *Spec) { s.Name = strings.Repeat("x", MaxNameLen+1) }},
		{"env", func(s *Spec) { s.Env = map[string]string{"1BAD": "x"} }},
		{"workdir", func(s *Spec) { s.Workdir = "relative" }},
		{"labels", func(s *Spec) { s.Labels = map[string]string{"-bad": "x"} }},
		{"timeout", func(s *Spec) { s.Timeout = -time.Second }},
		{"priority", func(s *Spec) { s.Priority = MaxPriority + 1 }},
		{"resources.memory_mib", func(s *Spec) { s.MemoryMiB = -1 }},
		{"retry.max_attempts", func(s *Spec) { s.Retry.MaxAttempts = MaxAttemptsLimit + 1 }},
		{"retry.retryable_exit_codes", func(s *Spec) { s.Retry.RetryableExitCodes = []int32{0} }},
		{"retry.jitter", func(s *Spec) { s.Retry.Jitter = 2 }},
		{"image", func(s *Spec) { s.Image = "bad image" }},
		{"secrets[0].name", func(s *Spec) { s.Secrets = []SecretRef{{Name: "DB_PASS"}} }},
		{"secrets[1].env", func(s *Spec) { s.Secrets = []SecretRef{{Name: "a-b"}, {Name: "c", Env: "1X"}} }},
		{"secrets[1].env", func(s *Spec) { s.Secrets = []SecretRef{{Name: "db.pass"}, {Name: "other", Env: "SECRET_DB_PASS"}} }},
		{"secrets[0].env", func(s *Spec) {
			s.Env = map[string]string{"PGPASSWORD": "x"}
			s.Secrets = []SecretRef{{Name: "db", Env: "PGPASSWORD"}}
		}},
		{"secrets", func(s *Spec) { s.Secrets = slices.Repeat([]SecretRef{{Name: "x"}}, MaxSecrets+1) }},
		// Every field is bounded, so that the largest valid request is too.
		{"interpreter", func(s *Spec) { s.Command, s.Script, s.Interpreter = nil, "echo", "/"+strings.Repeat("x", MaxPathLen) }},
		{"workdir", func(s *Spec) { s.Workdir = "/" + strings.Repeat("x", MaxPathLen) }},
		{"retry.retryable_exit_codes", func(s *Spec) { s.Retry.RetryableExitCodes = slices.Repeat([]int32{1}, MaxRetryableCodes+1) }},
		{"retry.retryable_classes", func(s *Spec) {
			s.Retry.RetryableClasses = slices.Repeat([]FailureClass{FailureTimeout}, MaxRetryableKinds+1)
		}},
		// PostgreSQL stores neither text nor JSON with a NUL in it: every
		// string field must refuse one here, not fail later in the insert.
		{"name", func(s *Spec) { s.Name = "a\x00b" }},
		{"script", func(s *Spec) { s.Command, s.Script = nil, "echo\x00" }},
		{"workdir", func(s *Spec) { s.Workdir = "/tmp/\x00" }},
		{"idempotency_key", func(s *Spec) { s.IdempotencyKey = "k\x00" }},
		{"labels.a", func(s *Spec) { s.Labels = map[string]string{"a": "b\x00"} }},
		{"tags.a", func(s *Spec) { s.Tags = map[string]string{"a": "b\x00"} }},
	} {
		s := ok()
		tc.edit(&s)
		err := s.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("field %s: Validate() = %v, want a FieldError on %s", tc.field, err, tc.field)
		}
	}
	s := ok()
	if err := s.Validate(); err != nil {
		t.Errorf("valid spec: %v", err)
	}
}

// TestArgv: a script runs through its interpreter (DefaultInterpreter when
// none is given) and wins over a command; a command is used as it is, an
// empty one included. Spec.Argv and Argv agree on every case.
func TestArgv(t *testing.T) {
	for _, tc := range []struct {
		name                string
		command             []string
		script, interpreter string
		want                []string
	}{
		{"command", []string{"echo", "a b", ""}, "", "", []string{"echo", "a b", ""}},
		{"command without args", []string{"true"}, "", "", []string{"true"}},
		{"empty command", []string{}, "", "", []string{}},
		{"nothing", nil, "", "", nil},
		{"script", nil, "echo hi; exit 3", "", []string{DefaultInterpreter, "-c", "echo hi; exit 3"}},
		{"script with interpreter", nil, "echo hi", "/bin/bash", []string{"/bin/bash", "-c", "echo hi"}},
		{"script over command", []string{"true"}, "false", "", []string{DefaultInterpreter, "-c", "false"}},
		{"interpreter without script", []string{"true"}, "", "/bin/bash", []string{"true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Argv(tc.command, tc.script, tc.interpreter)); diff != "" {
				t.Errorf("Argv (-want +got):\n%s", diff)
			}
			s := Spec{Command: tc.command, Script: tc.script, Interpreter: tc.interpreter}
			if diff := cmp.Diff(tc.want, s.Argv()); diff != "" {
				t.Errorf("Spec.Argv (-want +got):\n%s", diff)
			}
		})
	}
}
