package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// Result is how an attempt ended.
type Result struct {
	ExitCode int
	Signal   string
	Class    job.FailureClass // FailureNone for a process that ran to its end
	Message  string
	// Log accounting the agent reports with the result; published as one
	// LogBatchSent (and LogBatchDropped) event per attempt, never per batch.
	LogBatches, LogLines, LogDropped int64
	// StartedAt, when set, is the start of an attempt whose start report
	// is applied together with this result (ApplyReports merges them).
	StartedAt time.Time
}

// Outcome is what FinishAttempt decided.
type Outcome struct {
	JobID     string
	State     job.State
	Duplicate bool      // the attempt had already finished: nothing changed
	RunAt     time.Time // when State is retrying
	// Attempt and AssignedAt are the attempt's number and when it was
	// assigned (its trace's start); WorkerID its worker.
	Attempt    int32
	AssignedAt time.Time
	WorkerID   uuid.UUID
}

// AttemptEnd is an attempt that ended without a result from its agent:
// the server cancelled it, lost its worker, timed it out, or could not
// deliver it. A job cancelled before its first assignment ends its
// attempt 1 unassigned: WorkerID is empty and Since is the job's creation.
type AttemptEnd struct {
	JobID    string
	Attempt  int32
	WorkerID string
	// Since is the attempt's assignment, At its end.
	Since, At time.Time
	Class     job.FailureClass // cancelled, timeout, worker_lost
	State     job.State        // the job's state after it
	Message   string
}

// OnAttemptEnd has fn called with every attempt the store ends other than
// by an agent's result (ApplyReports): CancelJob, FinishAttempt,
// WorkerGone, ExpireSilentWorkers, FailOverdueAttempts and
// UnlistedAttempts call it after their commit, in the caller's goroutine.
// Set it before the store is used.
func (s *Store) OnAttemptEnd(fn func(AttemptEnd)) { s.attemptEnded = fn }

// ended passes the attempts a committed transaction ended to the
// OnAttemptEnd function.
func (s *Store) ended(ends []AttemptEnd) {
	if s.attemptEnded == nil {
		return
	}
	now := s.now()
	for _, e := range ends {
		e.At = now
		s.attemptEnded(e)
	}
}

// FinishAttempt records the end of the attempt of job jobID with token
// and applies the retry policy: the job succeeds, retries after a
// backoff, or fails. A token that is no longer current is rejected with
// job.ErrStale; a repeated report of a finished attempt returns Duplicate.
// The server calls it for attempts it ends itself (agents' results go
// through ApplyReports), and reports them to OnAttemptEnd.
func (s *Store) FinishAttempt(ctx context.Context, jobID uuid.UUID, token int64, r Result) (Outcome, error) {
	var out Outcome
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = s.finishAttempt(ctx, tx, jobID, token, r)
		return err
	})
	if err == nil && !out.Duplicate {
		s.ended([]AttemptEnd{{JobID: out.JobID, Attempt: out.Attempt, WorkerID: out.WorkerID.String(), Since: out.AssignedAt,
			Class: job.Result{ExitCode: r.ExitCode, Class: r.Class}.FailureClass(), State: out.State, Message: r.Message}})
	}
	return out, err
}

func (s *Store) finishAttempt(ctx context.Context, tx db.DBTX, jobID uuid.UUID, token int64, r Result) (Outcome, error) {
	q := db.New(tx)
	a, current, err := lockAttempt(ctx, q, jobID, token)
	if err != nil {
		return Outcome{}, err
	}
	out := Outcome{JobID: a.JobID.String(), Attempt: a.Number, AssignedAt: a.AssignedAt, WorkerID: a.WorkerID}
	if a.FinishedAt != nil && a.FailureClass != nil && *a.FailureClass == string(job.FailureWorkerLost) {
		// The server gave up on this worker: its late result is stale.
		s.staleReports.Add(1)
		return out, fmt.Errorf("finish attempt %d of job %s: lost by its worker earlier: %w", a.Number, a.JobID, job.ErrStale)
	}
	if a.FinishedAt != nil {
		out.Duplicate, out.State = true, job.State(a.State)
		return out, nil
	}
	if !current {
		s.staleReports.Add(1)
		return out, fmt.Errorf("finish attempt %d of job %s: %w", a.Number, a.JobID, job.ErrStale)
	}
	j, err := lockJob(ctx, q, a.JobID)
	if err != nil {
		return out, err
	}
	var started []eventbus.Event
	if !r.StartedAt.IsZero() && a.State == string(job.StateAssigned) {
		started = append(started, jobStarted(a.JobID.String(), a.Number, a.WorkerID.String()))
	} else {
		r.StartedAt = time.Time{}
	}
	err = s.finish(ctx, q, tx, j, a.Number, token, r, &out, ranFrom(a.AssignedAt, a.StartedAt), started...)
	return out, err
}

// finish ends the current attempt of j (locked), which started (or was
// assigned, when no start was reported) at from, and moves the job on.
func (s *Store) finish(ctx context.Context, q *db.Queries, tx db.DBTX, j job.Job, number int32, token int64, r Result, out *Outcome, from time.Time, before ...eventbus.Event) error {
	now := s.now()
	if !r.StartedAt.IsZero() {
		from = r.StartedAt
	}
	d, err := job.Decide(j, job.Result{ExitCode: r.ExitCode, Class: r.Class}, now, nil)
	if err != nil {
		return err
	}
	jobID, err := uuid.Parse(j.ID)
	if err != nil {
		return fmt.Errorf("finish attempt %d of job %q: %w", number, j.ID, err)
	}
	var startedAt *time.Time
	if !r.StartedAt.IsZero() {
		startedAt = &r.StartedAt
	}
	upd := db.FinishJobAttemptParams{AttemptState: string(d.Attempt), Now: now, ExitCode: ptr(int32(r.ExitCode)),
		Signal: r.Signal, FailureClass: classColumn(d.Class), Message: r.Message, StartedAt: startedAt, State: string(d.Next), JobID: jobID, Token: token}
	if d.Next == job.StateRetrying {
		upd.RunAt, out.RunAt = &d.RetryAt, d.RetryAt
	}
	if d.Final() {
		upd.FinishedAt = &now
	}
	if err := q.FinishJobAttempt(ctx, upd); err != nil {
		return err
	}
	if _, err := eventbus.Publish(ctx, tx, appendResultEvents(before, &j, number, &r, &d, now.Sub(from))...); err != nil {
		return err
	}
	out.State = d.Next
	return nil
}

// classColumn is a failure class as the attempts and jobs tables keep it:
// NULL for none.
func classColumn(c job.FailureClass) *string {
	if c == job.FailureNone {
		return nil
	}
	return ptr(string(c))
}

// finishBatch applies the results reports[idx...] with set-based writes
// (one lock query, one update of the attempts, one of the jobs, one event
// insert), and those that schedule a retry one by one.
func (s *Store) finishBatch(ctx context.Context, tx db.DBTX, q *db.Queries, later db.DBTX, reports []Report, idx []int, out []ReportOutcome, seen map[int64]job.State) error {
	rows, err := q.LockAttempts(ctx, reportJobs(reports, idx))
	if err != nil {
		return fmt.Errorf("lock attempts: %w", err)
	}
	byToken := make(map[int64]db.LockAttemptsRow, len(rows))
	for _, r := range rows {
		byToken[r.Token] = r
	}
	if err := addEarlierAttempts(ctx, q, reports, idx, byToken); err != nil {
		return err
	}
	b := resultBatch{now: s.now()}
	var slow []int // results that schedule a retry: they need the queue
	for _, i := range idx {
		retry, err := s.addResult(&b, reports, i, byToken, out, seen)
		if err != nil {
			return err
		}
		if retry {
			slow = append(slow, i)
		}
	}
	if err := b.write(ctx, later); err != nil {
		return err
	}
	for _, i := range slow {
		o, err := s.finishAttempt(ctx, tx, reports[i].JobID, reports[i].Token, *reports[i].Finish)
		if errors.Is(err, job.ErrStale) {
			out[i].Stale = true
		} else if err != nil {
			return err
		}
		out[i].Outcome = o
	}
	return nil
}

// addEarlierAttempts adds to byToken the earlier attempts that results
// reports[idx...] may name.
func addEarlierAttempts(ctx context.Context, q *db.Queries, reports []Report, idx []int, byToken map[int64]db.LockAttemptsRow) error {
	// A token that is not its job's latest attempt may be an earlier one,
	// finished before a later one replaced it: its result again (a
	// duplicate) or a late one of a lost attempt (stale), told below.
	var missing []int64
	for _, i := range idx {
		if _, ok := byToken[reports[i].Token]; !ok {
			missing = append(missing, reports[i].Token)
		}
	}
	if len(missing) > 0 {
		rows, err := q.EarlierAttempts(ctx, missing)
		if err != nil {
			return fmt.Errorf("earlier attempts: %w", err)
		}
		for _, e := range rows {
			byToken[e.Token] = db.LockAttemptsRow{Token: e.Token, JobID: e.JobID, Number: e.Number, State: e.State, FinishedAt: e.FinishedAt, FailureClass: e.FailureClass}
		}
	}
	return nil
}

// resultBatch collects the set-based writes of a batch of results.
type resultBatch struct {
	now    time.Time
	fj     db.FinishJobsParams
	events []eventbus.Event
}

// addResult tells what the result reports[i] does to its attempt (in
// byToken, locked): stale, a duplicate, an end that joins the batch's
// writes, or a retry, left to the caller to apply on its own (retry).
func (s *Store) addResult(b *resultBatch, reports []Report, i int, byToken map[int64]db.LockAttemptsRow, out []ReportOutcome, seen map[int64]job.State) (retry bool, err error) {
	r := *reports[i].Finish
	a, ok := byToken[reports[i].Token]
	switch {
	case !ok, a.JobID != reports[i].JobID, a.FinishedAt != nil && a.FailureClass != nil && *a.FailureClass == string(job.FailureWorkerLost):
		s.staleReports.Add(1)
		out[i].Stale = true
		return false, nil
	case a.FinishedAt != nil:
		out[i].Outcome = Outcome{JobID: a.JobID.String(), Duplicate: true, State: job.State(a.State)}
		return false, nil
	case seen[a.Token] != "":
		out[i].Outcome = Outcome{JobID: a.JobID.String(), Duplicate: true, State: seen[a.Token]}
		return false, nil
	}
	st := job.State(a.JobState)
	if st != job.StateAssigned && st != job.StateRunning {
		s.staleReports.Add(1)
		out[i].Stale = true
		return false, nil
	}
	j := job.Job{ID: a.JobID.String(), State: st, Attempt: int(a.Number), MaxAttempts: int(a.MaxAttempts)}
	j.Spec.Type = a.Type
	res := job.Result{ExitCode: r.ExitCode, Class: r.Class}
	if res.NeedsRetryPolicy() {
		// Decoded apart so that j stays off the heap when it is not.
		rp := new(job.RetryPolicy)
		if err := json.Unmarshal(a.Retry, rp); err != nil {
			return false, fmt.Errorf("decode retry policy of job %s: %w", a.JobID, err)
		}
		j.Spec.Retry = *rp
	}
	d, err := job.Decide(j, res, b.now, nil)
	if err != nil {
		return false, err
	}
	if d.Next == job.StateRetrying {
		return true, nil
	}
	seen[a.Token] = d.Attempt
	from := a.RanFrom
	if !r.StartedAt.IsZero() && a.State == string(job.StateAssigned) {
		b.events = append(b.events, jobStarted(j.ID, a.Number, a.WorkerID.String()))
		from = r.StartedAt
	} else {
		r.StartedAt = time.Time{}
	}
	b.events = appendResultEvents(b.events, &j, a.Number, &r, &d, b.now.Sub(from))
	class := string(d.Class) // "" for none
	fj := &b.fj
	fj.JobIds = append(fj.JobIds, a.JobID)
	fj.Tokens = append(fj.Tokens, a.Token)
	fj.States = append(fj.States, string(d.Next)) // the attempt's state too: not a retry
	fj.ExitCodes = append(fj.ExitCodes, int32(r.ExitCode))
	fj.Signals = append(fj.Signals, r.Signal)
	fj.Classes = append(fj.Classes, class)
	fj.Messages = append(fj.Messages, r.Message)
	fj.StartedAts = append(fj.StartedAts, r.StartedAt)
	out[i].Outcome = Outcome{JobID: j.ID, State: d.Next, Attempt: a.Number, AssignedAt: a.AssignedAt}
	return false, nil
}

// write queues the batch's writes: one update of the attempts and jobs,
// one event insert.
func (b *resultBatch) write(ctx context.Context, later db.DBTX) error {
	if len(b.fj.Tokens) == 0 {
		return nil
	}
	b.fj.Now = b.now
	w := db.New(later)
	// The statement joins the rows with the batch. A nested loop
	// would rescan the whole batch for each row: quadratic, and it is
	// the plan PostgreSQL caches for a table that was nearly empty and
	// never analyzed when the statement was first planned. So the join
	// is a hash join, whatever the statistics say.
	if _, err := later.Exec(ctx, "set local enable_nestloop = off"); err != nil {
		return err
	}
	if err := w.FinishJobs(ctx, b.fj); err != nil {
		return fmt.Errorf("finish jobs: %w", err)
	}
	if _, err := later.Exec(ctx, "set local enable_nestloop = default"); err != nil {
		return err
	}
	return eventbus.Append(ctx, later, b.events...)
}

// CancelResult says what a cancel has to stop.
type CancelResult struct {
	Job      job.Job
	Token    int64  // the running attempt to stop, 0 if none
	WorkerID string // its worker
}

// CancelJob cancels a job in any non-final state. A queued job leaves the
// queue; an assigned or running one has its attempt ended as cancelled,
// and the caller must tell the worker (Token, WorkerID) to stop it.
func (s *Store) CancelJob(ctx context.Context, id, reason string) (CancelResult, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return CancelResult{}, &job.FieldError{Field: "id", Rule: "must be a job id (UUID)"}
	}
	var res CancelResult
	var ends []AttemptEnd
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		ends = nil
		q := db.New(tx)
		j, err := lockJob(ctx, q, uid)
		if err != nil {
			return err
		}
		if err := job.CheckTransition(j.State, job.StateCancelled); err != nil {
			return err
		}
		switch j.State {
		case job.StateQueued, job.StateRetrying:
			now := s.now()
			if err := q.UpdateJobState(ctx, db.UpdateJobStateParams{ID: uid, State: string(job.StateCancelled), Now: now, FinishedAt: &now,
				FailureClass: ptr(string(job.FailureCancelled)), Message: reason}); err != nil {
				return err
			}
			if j.Attempt == 0 { // its first attempt ends before its assignment
				ends = append(ends, AttemptEnd{JobID: j.ID, Attempt: 1, Since: j.CreatedAt, Class: job.FailureCancelled, State: job.StateCancelled, Message: reason})
			}
			_, err = eventbus.Publish(ctx, tx, jobCancelled(&j, reason))
			return err
		default:
			attempts, err := q.ListAttempts(ctx, uid)
			if err != nil {
				return err
			}
			cur := attempts[len(attempts)-1]
			res.Token, res.WorkerID = cur.Token, cur.WorkerID.String()
			var out Outcome
			r := Result{ExitCode: -1, Class: job.FailureCancelled, Message: reason}
			if err := s.finish(ctx, q, tx, j, cur.Number, cur.Token, r, &out, ranFrom(cur.AssignedAt, cur.StartedAt)); err != nil {
				return err
			}
			ends = append(ends, AttemptEnd{JobID: j.ID, Attempt: cur.Number, WorkerID: res.WorkerID, Since: cur.AssignedAt, Class: r.Class, State: out.State, Message: reason})
			return nil
		}
	})
	if err != nil {
		return CancelResult{}, fmt.Errorf("cancel job %s: %w", id, err)
	}
	s.ended(ends)
	res.Job, err = s.GetJob(ctx, id)
	return res, err
}

// RetryJob starts a new attempt of a job in a final state: the job is
// queued again with room for as many attempts as its policy allows
// (job.DefaultMaxAttempts when it sets none).
func (s *Store) RetryJob(ctx context.Context, id string) (job.Job, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return job.Job{}, &job.FieldError{Field: "id", Rule: "must be a job id (UUID)"}
	}
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		j, err := lockJob(ctx, q, uid)
		if err != nil {
			return err
		}
		if !j.State.Final() {
			return fmt.Errorf("%w: job is %s; only a finished job can be retried", job.ErrConflict, j.State)
		}
		more := j.Spec.Retry.MaxAttempts
		if more == 0 {
			more = job.DefaultMaxAttempts
		}
		now := s.now()
		if err := q.RequeueJob(ctx, db.RequeueJobParams{Now: now, MaxAttempts: int32(j.Attempt + more), ID: uid}); err != nil {
			return err
		}
		_, err = eventbus.Publish(ctx, tx, jobRetryScheduled(id, j.Attempt+1, now, 0))
		return err
	})
	if err != nil {
		return job.Job{}, fmt.Errorf("retry job %s: %w", id, err)
	}
	return s.GetJob(ctx, id)
}

// FailOverdueAttempts ends, as timed out, started attempts whose job
// timeout plus margin has passed without a result (their worker went
// silent); it returns how many.
func (s *Store) FailOverdueAttempts(ctx context.Context, margin time.Duration) (int, error) {
	now := s.now()
	overdue, err := s.q.OverdueAttempts(ctx, db.OverdueAttemptsParams{MarginSeconds: margin.Seconds(), Now: &now})
	if err != nil {
		return 0, fmt.Errorf("overdue attempts: %w", err)
	}
	n := 0
	for _, a := range overdue {
		_, err := s.FinishAttempt(ctx, a.JobID, a.Token, Result{ExitCode: -1, Class: job.FailureTimeout, Message: "timed out: no result from the worker within the job's timeout"})
		if err != nil && !errors.Is(err, job.ErrStale) {
			return n, err
		}
		n++
	}
	return n, nil
}

// ExpireSilentWorkers fails the attempts of workers not seen since before
// cutoff (their replica died, or they vanished) as worker_lost; their
// WorkerDisconnected says replica_lost.
func (s *Store) ExpireSilentWorkers(ctx context.Context, cutoff time.Time) ([]string, error) {
	ids, err := s.q.ExpiredWorkers(ctx, &cutoff)
	if err != nil {
		return nil, fmt.Errorf("expired workers: %w", err)
	}
	var out []string
	for _, id := range ids {
		if _, err := s.workerGone(ctx, &hodeiv1.WorkerDisconnected{WorkerId: id.String(), Reason: "no heartbeat within the lease", ReplicaLost: true}, "disconnected", false); err != nil {
			return out, err
		}
		out = append(out, id.String())
	}
	return out, nil
}

// lockJob loads job uid locked for update.
func lockJob(ctx context.Context, q *db.Queries, uid uuid.UUID) (job.Job, error) {
	row, err := q.GetJobForUpdate(ctx, uid)
	if err != nil {
		if IsNoRows(err) {
			return job.Job{}, fmt.Errorf("job %s: %w", uid, job.ErrNotFound)
		}
		return job.Job{}, err
	}
	return fromRow(row)
}

// ranFrom is the origin of an attempt's duration: its start, or its
// assignment when no start was reported.
func ranFrom(assigned time.Time, started *time.Time) time.Time {
	if started != nil {
		return *started
	}
	return assigned
}
