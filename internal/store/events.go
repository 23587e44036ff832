package store

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/jobpb"
)

// The events of a job that the store publishes, each built here and
// written in the transaction of the change it describes.

func jobCreated(id string, spec *job.Spec) eventbus.Event {
	return eventbus.New("job", id, &hodeiv1.JobCreated{JobId: id, Name: spec.Name, Type: spec.Type, Priority: spec.Priority, Image: spec.Image, Labels: spec.Labels})
}

func jobAssigned(a *Assignment) eventbus.Event {
	return eventbus.New("job", a.JobID, &hodeiv1.JobAssigned{JobId: a.JobID, Attempt: int32(a.Attempt), WorkerId: a.WorkerID, FencingToken: a.Token})
}

func jobStarted(id string, attempt int32, workerID string) eventbus.Event {
	return eventbus.New("job", id, &hodeiv1.JobStarted{JobId: id, Attempt: attempt, WorkerId: workerID})
}

// appendResultEvents appends to evs the events of the end of attempt
// number of job j, as d decided it with result r after the attempt ran
// for ran: how the attempt ended, the retry it schedules or the retries
// it exhausted, and its log accounting.
func appendResultEvents(evs []eventbus.Event, j *job.Job, number int32, r *Result, d *job.Decision, ran time.Duration) []eventbus.Event {
	id := j.ID
	dur := durationpb.New(ran)
	switch d.Attempt {
	case job.StateSucceeded:
		evs = append(evs, eventbus.New("job", id, &hodeiv1.JobCompleted{JobId: id, Attempt: number, Type: j.Spec.Type, Duration: dur}))
	case job.StateCancelled:
		evs = append(evs, eventbus.New("job", id, &hodeiv1.JobCancelled{JobId: id, Attempt: number, Reason: r.Message, Type: j.Spec.Type, Duration: dur}))
	default:
		evs = append(evs, eventbus.New("job", id, &hodeiv1.JobFailed{JobId: id, Attempt: number, FailureClass: jobpb.ClassToProto(d.Class),
			ExitCode: int32(r.ExitCode), Message: r.Message, Final: d.Final(), State: jobpb.StateToProto(d.Next), Type: j.Spec.Type, Duration: dur}))
	}
	switch {
	case d.Next == job.StateRetrying:
		evs = append(evs, jobRetryScheduled(id, j.Attempt+1, d.RetryAt, d.Backoff))
	case d.Exhausted:
		evs = append(evs, eventbus.New("job", id, &hodeiv1.JobRetryExhausted{JobId: id, Attempts: int32(j.Attempt)}))
	}
	if r.LogBatches > 0 {
		evs = append(evs, eventbus.New("job", id, &hodeiv1.LogBatchSent{JobId: id, Attempt: number, Batches: r.LogBatches, Lines: r.LogLines}))
	}
	if r.LogDropped > 0 {
		evs = append(evs, eventbus.New("job", id, &hodeiv1.LogBatchDropped{JobId: id, Attempt: number, Lines: r.LogDropped}))
	}
	return evs
}

// jobCancelled announces the cancel of job j before it was assigned.
func jobCancelled(j *job.Job, reason string) eventbus.Event {
	return eventbus.New("job", j.ID, &hodeiv1.JobCancelled{JobId: j.ID, Attempt: int32(j.Attempt), Reason: reason, Type: j.Spec.Type})
}

// jobRetryScheduled announces attempt next of job id, at runAt after delay.
func jobRetryScheduled(id string, next int, runAt time.Time, delay time.Duration) eventbus.Event {
	return eventbus.New("job", id, &hodeiv1.JobRetryScheduled{JobId: id, NextAttempt: int32(next), RunAt: timestamppb.New(runAt), Delay: durationpb.New(delay)})
}
