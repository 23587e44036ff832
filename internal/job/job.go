// Package job is Hodei's domain vocabulary: the job spec and its validation,
// the lifecycle states and their allowed transitions, attempts, failure
// classes and the retry policy. It imports nothing else from Hodei and only
// the standard library, so every other package can speak it.
package job

import (
	"errors"
	"fmt"
	"time"
)

// Domain errors; the server maps them to RPC codes in one place.
var (
	ErrNotFound    = errors.New("not found")
	ErrInvalidSpec = errors.New("invalid job spec")
	ErrConflict    = errors.New("conflict")
	ErrStale       = errors.New("stale fencing token")
)

// FieldError names the field that broke a rule.
type FieldError struct {
	Field string
	Rule  string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Rule) }

// Unwrap makes every FieldError an ErrInvalidSpec.
func (e *FieldError) Unwrap() error { return ErrInvalidSpec }

// State is a job's lifecycle state.
type State string

const (
	StateQueued    State = "queued"
	StateAssigned  State = "assigned"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCancelled State = "cancelled"
	StateTimedOut  State = "timed_out"
	StateRetrying  State = "retrying"
)

// States lists every state, in lifecycle order.
var States = []State{StateQueued, StateAssigned, StateRunning, StateSucceeded, StateFailed, StateCancelled, StateTimedOut, StateRetrying}

// Final reports whether no transition leaves s (except a manual retry).
func (s State) Final() bool {
	switch s {
	case StateSucceeded, StateFailed, StateCancelled, StateTimedOut:
		return true
	}
	return false
}

// transitions is the one table of allowed state changes. A manual retry
// (final -> queued) is allowed explicitly by Retry, not here.
var transitions = map[State][]State{
	StateQueued:   {StateAssigned, StateCancelled},
	StateAssigned: {StateRunning, StateSucceeded, StateFailed, StateTimedOut, StateCancelled, StateRetrying, StateQueued},
	StateRunning:  {StateSucceeded, StateFailed, StateTimedOut, StateCancelled, StateRetrying},
	// A retrying job whose backoff elapsed is claimed directly (queued in all but name).
	StateRetrying: {StateQueued, StateAssigned, StateCancelled},
}

// CanTransition reports whether from -> to is an allowed automatic transition.
func CanTransition(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// CheckTransition returns ErrConflict naming both states when from -> to is not allowed.
func CheckTransition(from, to State) error {
	if !CanTransition(from, to) {
		return fmt.Errorf("%w: job cannot go from %s to %s", ErrConflict, from, to)
	}
	return nil
}

// FailureClass says why an attempt failed.
type FailureClass string

const (
	FailureNone         FailureClass = ""
	FailureExitCode     FailureClass = "exit_code"
	FailureTimeout      FailureClass = "timeout"
	FailureWorkerLost   FailureClass = "worker_lost"
	FailureProvisioning FailureClass = "provisioning"
	FailureCancelled    FailureClass = "cancelled"
	FailureInvalid      FailureClass = "invalid"
)

// FailureClasses lists every failure class but FailureNone.
var FailureClasses = []FailureClass{FailureExitCode, FailureTimeout, FailureWorkerLost, FailureProvisioning, FailureCancelled, FailureInvalid}

// Job is a stored job.
type Job struct {
	ID           string
	Spec         Spec
	State        State
	Attempt      int
	MaxAttempts  int
	CreatedAt    time.Time
	UpdatedAt    time.Time
	FinishedAt   time.Time
	RunAt        time.Time
	ExitCode     int
	FailureClass FailureClass
	Message      string
	Attempts     []Attempt
	// SubmittedBy names the API token that submitted the job ("" when
	// none did).
	SubmittedBy string
}

// Attempt is one execution of a job on one worker.
type Attempt struct {
	Number       int
	WorkerID     string
	Token        int64
	State        State
	AssignedAt   time.Time
	StartedAt    time.Time
	FinishedAt   time.Time
	ExitCode     int
	Signal       string
	FailureClass FailureClass
	Message      string
}
