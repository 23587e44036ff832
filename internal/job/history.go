package job

import (
	"slices"
	"time"
)

// Step is the kind of a HistoryEntry, in the order the steps of one
// attempt happen.
type Step int

const (
	StepCreated   Step = iota // the job was submitted
	StepAssigned              // an attempt was given to a worker
	StepStarted               // the worker started the attempt
	StepEnded                 // the attempt ended (State says how)
	StepCancelled             // the job was cancelled while no attempt ran
)

// HistoryEntry is one thing that happened to a job.
type HistoryEntry struct {
	Step Step
	Time time.Time
	// Attempt is the attempt the entry concerns: 0 for StepCreated, and
	// the last attempt before it (0 when none) for StepCancelled.
	Attempt  int
	WorkerID string
	// State is how the attempt ended (StepEnded), or cancelled.
	State    State
	ExitCode int
	Signal   string
	Class    FailureClass
	Message  string
}

// HistoryKey orders a job's history: by attempt, then by step. A job's
// attempts follow each other and the steps of one attempt happen in
// order, so an entry that appears later has a greater key than every
// entry before it, whatever the clocks that stamped them.
type HistoryKey struct {
	Attempt int
	Step    Step
}

// Key is the entry's place in its job's history.
func (e HistoryEntry) Key() HistoryKey { return HistoryKey{e.Attempt, e.Step} }

// Less reports whether k comes before o.
func (k HistoryKey) Less(o HistoryKey) bool {
	return k.Attempt < o.Attempt || (k.Attempt == o.Attempt && k.Step < o.Step)
}

// History tells what happened to j, oldest first, from the job as
// stored (with all its attempts): its submission, each attempt's
// assignment, start and end, and a cancel that came while no attempt
// ran. What a later change overwrote (a cancel before a retry that
// followed it) is not told.
func History(j Job) []HistoryEntry {
	out := []HistoryEntry{{Step: StepCreated, Time: j.CreatedAt}}
	attempts := slices.Clone(j.Attempts)
	slices.SortFunc(attempts, func(a, b Attempt) int { return a.Number - b.Number })
	for _, a := range attempts {
		out = append(out, HistoryEntry{Step: StepAssigned, Time: a.AssignedAt, Attempt: a.Number, WorkerID: a.WorkerID})
		if !a.StartedAt.IsZero() {
			out = append(out, HistoryEntry{Step: StepStarted, Time: a.StartedAt, Attempt: a.Number, WorkerID: a.WorkerID})
		}
		if a.State.Final() {
			out = append(out, HistoryEntry{Step: StepEnded, Time: a.FinishedAt, Attempt: a.Number, WorkerID: a.WorkerID,
				State: a.State, ExitCode: a.ExitCode, Signal: a.Signal, Class: a.FailureClass, Message: a.Message})
		}
	}
	if j.State == StateCancelled {
		last := 0
		ranCancelled := false
		if n := len(attempts); n > 0 {
			last = attempts[n-1].Number
			ranCancelled = attempts[n-1].State == StateCancelled
		}
		if !ranCancelled { // else the attempt's end tells it
			out = append(out, HistoryEntry{Step: StepCancelled, Time: j.FinishedAt, Attempt: last, State: StateCancelled, Message: j.Message})
		}
	}
	return out
}
