package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// Assignment is a job claimed for a worker: the attempt to run.
type Assignment struct {
	JobID     string
	Attempt   int
	Token     int64
	Spec      job.Spec
	CreatedAt time.Time // the job's
	WorkerID  string
}

// WorkerMatch is what a claim knows about the worker.
type WorkerMatch struct {
	ID       string
	Labels   map[string]string
	Image    string
	Provider string
	// CPUMillis and MemoryMiB: the most one job may use (0: not stated).
	CPUMillis, MemoryMiB int64
}

// Claim takes up to n ready jobs the worker can run (priority, then FIFO),
// creates their attempts and publishes JobAssigned, in one transaction.
// Concurrent claims never take the same job (FOR UPDATE SKIP LOCKED).
func (s *Store) Claim(ctx context.Context, w WorkerMatch, n int) ([]Assignment, error) {
	slots := make([]string, n)
	for i := range slots {
		slots[i] = w.ID
	}
	return s.ClaimSlots(ctx, w, slots)
}

// ClaimSlots claims jobs for a list of free slots (a worker id per slot,
// in the order jobs should go to them) of workers that share labels,
// image and per-job limits (given by like), in one statement and one
// transaction. Slots of workers that are no longer connected get nothing.
func (s *Store) ClaimSlots(ctx context.Context, like WorkerMatch, slots []string) ([]Assignment, error) {
	ids := make([]uuid.UUID, len(slots))
	for i, id := range slots {
		u, err := uuid.Parse(id)
		if err != nil {
			return nil, fmt.Errorf("claim: worker id: %w", err)
		}
		ids[i] = u
	}
	l, _ := json.Marshal(nonNil(like.Labels))
	var out []Assignment
	err := s.inTxDeferred(ctx, func(tx db.DBTX, later db.DBTX) error {
		out = nil
		rows, err := db.New(tx).ClaimJobs(ctx, db.ClaimJobsParams{WorkerIds: ids, Now: s.now(), WorkerLabels: l, WorkerImage: like.Image,
			WorkerCpuMillis: like.CPUMillis, WorkerMemoryMib: like.MemoryMiB})
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		events := make([]eventbus.Event, 0, len(rows))
		out = make([]Assignment, 0, len(rows))
		for _, r := range rows {
			out = append(out, Assignment{JobID: r.ID.String(), Attempt: int(r.Attempt), Token: r.Token, CreatedAt: r.CreatedAt, WorkerID: r.WorkerID.String()})
			a := &out[len(out)-1]
			if err := json.Unmarshal(r.Spec, &a.Spec); err != nil {
				return fmt.Errorf("decode spec of job %s: %w", r.ID, err)
			}
			events = append(events, eventbus.New("job", a.JobID, &hodeiv1.JobAssigned{JobId: a.JobID, Attempt: int32(a.Attempt), WorkerId: a.WorkerID, FencingToken: a.Token}))
		}
		return eventbus.Append(ctx, later, events...)
	})
	if err != nil {
		return nil, fmt.Errorf("claim jobs: %w", err)
	}
	return out, nil
}

// lockAttempt loads the attempt of job jobID with token, with the job
// locked, and says whether the token is still current (the job's latest
// attempt, not final).
func lockAttempt(ctx context.Context, q *db.Queries, jobID uuid.UUID, token int64) (db.GetAttemptRow, bool, error) {
	a, err := q.GetAttempt(ctx, db.GetAttemptParams{JobID: jobID, Token: token})
	if err != nil {
		if IsNoRows(err) {
			return a, false, fmt.Errorf("attempt token %d of job %s: %w", token, jobID, job.ErrStale)
		}
		return a, false, err
	}
	st := job.State(a.JobState)
	current := a.JobAttempt == a.Number && (st == job.StateAssigned || st == job.StateRunning)
	return a, current, nil
}

// StartAttempt records that the agent started the attempt of job jobID
// with token.
func (s *Store) StartAttempt(ctx context.Context, jobID uuid.UUID, token int64) error {
	return s.InTx(ctx, func(tx pgx.Tx) error {
		_, err := s.startAttempt(ctx, tx, jobID, token)
		return err
	})
}

// startAttempt returns how long the attempt waited from assignment to start.
func (s *Store) startAttempt(ctx context.Context, tx pgx.Tx, jobID uuid.UUID, token int64) (time.Duration, error) {
	q := db.New(tx)
	a, current, err := lockAttempt(ctx, q, jobID, token)
	if err != nil {
		return 0, err
	}
	if !current {
		s.staleReports.Add(1)
		return 0, fmt.Errorf("start attempt %d of job %s: %w", a.Number, a.JobID, job.ErrStale)
	}
	if a.State != "assigned" {
		return 0, nil // repeated report
	}
	now := s.now()
	if err := q.StartJobAttempts(ctx, db.StartJobAttemptsParams{Now: now, JobIds: []uuid.UUID{jobID}, Tokens: []int64{token}}); err != nil {
		return 0, err
	}
	_, err = eventbus.Publish(ctx, tx, eventbus.New("job", a.JobID.String(), &hodeiv1.JobStarted{JobId: a.JobID.String(), Attempt: a.Number, WorkerId: a.WorkerID.String()}))
	return now.Sub(a.AssignedAt), err
}

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
}

// FinishAttempt records the end of the attempt of job jobID with token
// and applies the retry policy: the job succeeds, retries after a
// backoff, or fails. A token that is no longer current is rejected with
// job.ErrStale; a repeated report of a finished attempt returns Duplicate.
func (s *Store) FinishAttempt(ctx context.Context, jobID uuid.UUID, token int64, r Result) (Outcome, error) {
	var out Outcome
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = s.finishAttempt(ctx, tx, jobID, token, r)
		return err
	})
	return out, err
}

func (s *Store) finishAttempt(ctx context.Context, tx db.DBTX, jobID uuid.UUID, token int64, r Result) (Outcome, error) {
	q := db.New(tx)
	a, current, err := lockAttempt(ctx, q, jobID, token)
	if err != nil {
		return Outcome{}, err
	}
	out := Outcome{JobID: a.JobID.String()}
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
		started = append(started, eventbus.New("job", a.JobID.String(), &hodeiv1.JobStarted{JobId: a.JobID.String(), Attempt: a.Number, WorkerId: a.WorkerID.String()}))
	} else {
		r.StartedAt = time.Time{}
	}
	err = s.finish(ctx, q, tx, j, a.Number, token, r, &out, started...)
	return out, err
}

// finish ends the current attempt of j (locked) and moves the job on.
func (s *Store) finish(ctx context.Context, q *db.Queries, tx db.DBTX, j job.Job, number int32, token int64, r Result, out *Outcome, before ...eventbus.Event) error {
	now := s.now()
	d, err := decide(j, number, r, now)
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
	upd := db.FinishJobAttemptParams{AttemptState: string(d.attemptState), Now: now, ExitCode: ptr(int32(d.r.ExitCode)),
		Signal: d.r.Signal, FailureClass: d.class(), Message: d.r.Message, StartedAt: startedAt, State: string(d.next), JobID: jobID, Token: token}
	if d.next == job.StateRetrying {
		upd.RunAt, out.RunAt = &d.runAt, d.runAt
	}
	if d.next.Final() {
		upd.FinishedAt = &now
	}
	if err := q.FinishJobAttempt(ctx, upd); err != nil {
		return err
	}
	if _, err := eventbus.Publish(ctx, tx, append(before, d.events...)...); err != nil {
		return err
	}
	out.State = d.next
	return nil
}

// failureClass is r's class, with a non-zero exit and no class counted as
// an exit-code failure.
func (r Result) failureClass() job.FailureClass {
	if r.Class == job.FailureNone && r.ExitCode != 0 {
		return job.FailureExitCode
	}
	return r.Class
}

// needsRetryPolicy says whether deciding on r reads the job's retry
// policy: only a failure (not a success, not a cancel) can be retried.
func needsRetryPolicy(r Result) bool {
	c := r.failureClass()
	return c != job.FailureNone && c != job.FailureCancelled
}

// decision is what a result does to an attempt and its job.
type decision struct {
	r            Result // with the failure class filled in
	attemptState job.State
	next         job.State // the job's
	runAt        time.Time // when next is retrying
	events       []eventbus.Event
}

func (d decision) class() *string {
	if d.r.Class == job.FailureNone {
		return nil
	}
	return ptr(string(d.r.Class))
}

// decide applies the retry policy of j to the result of its attempt
// number: the one place that turns a result into states and events.
func decide(j job.Job, number int32, r Result, now time.Time) (decision, error) {
	r.Class = r.failureClass()
	d := decision{r: r, attemptState: job.StateSucceeded}
	switch r.Class {
	case job.FailureNone:
	case job.FailureTimeout:
		d.attemptState = job.StateTimedOut
	case job.FailureCancelled:
		d.attemptState = job.StateCancelled
	default:
		d.attemptState = job.StateFailed
	}
	id := j.ID
	d.next = d.attemptState
	var retryEvents []eventbus.Event
	if needsRetryPolicy(r) {
		retry := j.Spec.Retry.Retryable(r.Class, r.ExitCode)
		switch {
		case retry && j.Attempt < j.MaxAttempts:
			d.next = job.StateRetrying
			delay := j.Spec.Retry.Backoff(j.Attempt, nil)
			d.runAt = now.Add(delay)
			retryEvents = append(retryEvents, eventbus.New("job", id, &hodeiv1.JobRetryScheduled{JobId: id, NextAttempt: int32(j.Attempt + 1),
				RunAt: timestamppb.New(d.runAt), Delay: durationpb.New(delay)}))
		case retry:
			retryEvents = append(retryEvents, eventbus.New("job", id, &hodeiv1.JobRetryExhausted{JobId: id, Attempts: int32(j.Attempt)}))
		}
	}
	if err := job.CheckTransition(j.State, d.next); err != nil {
		return d, err
	}
	switch d.attemptState {
	case job.StateSucceeded:
		d.events = append(d.events, eventbus.New("job", id, &hodeiv1.JobCompleted{JobId: id, Attempt: number}))
	case job.StateCancelled:
		d.events = append(d.events, eventbus.New("job", id, &hodeiv1.JobCancelled{JobId: id, Attempt: number, Reason: r.Message}))
	default:
		d.events = append(d.events, eventbus.New("job", id, &hodeiv1.JobFailed{JobId: id, Attempt: number, FailureClass: hodeiv1.FailureClass(failureClassNumber(r.Class)),
			ExitCode: int32(r.ExitCode), Message: r.Message, Final: d.next.Final(), State: hodeiv1.JobState(stateNumber(d.next))}))
	}
	d.events = append(d.events, retryEvents...)
	if r.LogBatches > 0 {
		d.events = append(d.events, eventbus.New("job", id, &hodeiv1.LogBatchSent{JobId: id, Attempt: number, Batches: r.LogBatches, Lines: r.LogLines}))
	}
	if r.LogDropped > 0 {
		d.events = append(d.events, eventbus.New("job", id, &hodeiv1.LogBatchDropped{JobId: id, Attempt: number, Lines: r.LogDropped}))
	}
	return d, nil
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
	err = s.InTx(ctx, func(tx pgx.Tx) error {
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
			_, err = eventbus.Publish(ctx, tx, eventbus.New("job", id, &hodeiv1.JobCancelled{JobId: id, Attempt: int32(j.Attempt), Reason: reason}))
			return err
		default:
			attempts, err := q.ListAttempts(ctx, uid)
			if err != nil {
				return err
			}
			cur := attempts[len(attempts)-1]
			res.Token, res.WorkerID = cur.Token, cur.WorkerID.String()
			var out Outcome
			return s.finish(ctx, q, tx, j, cur.Number, cur.Token, Result{ExitCode: -1, Class: job.FailureCancelled, Message: reason}, &out)
		}
	})
	if err != nil {
		return CancelResult{}, fmt.Errorf("cancel job %s: %w", id, err)
	}
	res.Job, err = s.GetJob(ctx, id)
	return res, err
}

// LogRecord is one stored batch.
type LogRecord struct {
	Attempt int
	Seq     int64
	Data    []byte
	Time    time.Time
}

// ReadLogs returns stored batches after (attempt, seq), in order.
func (s *Store) ReadLogs(ctx context.Context, jobID string, onlyAttempt, afterAttempt int, afterSeq int64, limit int) ([]LogRecord, error) {
	uid, err := uuid.Parse(jobID)
	if err != nil {
		return nil, &job.FieldError{Field: "id", Rule: "must be a job id (UUID)"}
	}
	rows, err := s.Q.ReadLogs(ctx, db.ReadLogsParams{JobID: uid, OnlyAttempt: int32(onlyAttempt), AfterAttempt: int32(afterAttempt), AfterSeq: afterSeq, MaxRows: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("read logs: %w", err)
	}
	out := make([]LogRecord, len(rows))
	for i, r := range rows {
		out[i] = LogRecord{Attempt: int(r.Attempt), Seq: r.Seq, Data: r.Data, Time: r.CreatedAt}
	}
	return out, nil
}

// StaleReports counts reports rejected for a stale fencing token.
func (s *Store) StaleReports() int64 { return s.staleReports.Load() }

func failureClassNumber(c job.FailureClass) int32 {
	switch c {
	case job.FailureExitCode:
		return 1
	case job.FailureTimeout:
		return 2
	case job.FailureWorkerLost:
		return 3
	case job.FailureProvisioning:
		return 4
	case job.FailureCancelled:
		return 5
	case job.FailureInvalid:
		return 6
	}
	return 0
}

func stateNumber(s job.State) int32 {
	for i, st := range job.States {
		if st == s {
			return int32(i + 1)
		}
	}
	return 0
}

var _ = pgx.ErrNoRows

// LogBatchIn is one log batch to store.
type LogBatchIn struct {
	JobID uuid.UUID
	Token int64
	Seq   int64
	Lines int
	Data  []byte
}

// AppendLogBatches stores many batches in one statement and commit (group
// commit). Batches of attempts that are no longer their job's latest are
// not stored; their tokens are returned as stale. Batches stored before
// are accepted again without change.
func (s *Store) AppendLogBatches(ctx context.Context, in []LogBatchIn) (stale map[int64]bool, err error) {
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		var jobs map[string]bool
		if stale, jobs, err = s.appendLogBatches(ctx, q, in); err != nil {
			return err
		}
		return notifyLogs(ctx, q, jobs)
	})
	return stale, err
}

// LogsChannel is the NOTIFY channel that announces new log output, with
// the job id as payload: a hint for log followers on every replica. The
// end of a job is not announced here: followers learn it from the job's
// final event (one NOTIFY per finished job cost every replica's listener
// a message per job).
const LogsChannel = "hodei_logs"

func notifyLogs(ctx context.Context, q *db.Queries, jobs map[string]bool) error {
	if len(jobs) == 0 {
		return nil
	}
	ids := make([]string, 0, len(jobs))
	for id := range jobs {
		ids = append(ids, id)
	}
	return q.NotifyMany(ctx, db.NotifyManyParams{Channel: LogsChannel, Payloads: ids})
}

func (s *Store) appendLogBatches(ctx context.Context, q *db.Queries, in []LogBatchIn) (stale map[int64]bool, jobs map[string]bool, err error) {
	in, jobs, err = s.applyLogCap(ctx, q, in)
	if err != nil {
		return nil, nil, err
	}
	p := db.InsertLogBatchesParams{Now: s.now()}
	for _, b := range in {
		p.JobIds = append(p.JobIds, b.JobID)
		p.Tokens = append(p.Tokens, b.Token)
		p.Seqs = append(p.Seqs, b.Seq)
		p.Lines = append(p.Lines, int32(b.Lines))
		p.Sizes = append(p.Sizes, int32(len(b.Data)))
		p.Datas = append(p.Datas, b.Data)
	}
	rows, err := q.InsertLogBatches(ctx, p)
	if err != nil {
		return nil, nil, fmt.Errorf("append logs: %w", err)
	}
	if len(rows) == len(in) {
		return nil, jobs, nil
	}
	// Some were duplicates or stale: tell them apart per token.
	checked := map[int64]bool{}
	for _, b := range in {
		if _, ok := checked[b.Token]; ok {
			continue
		}
		latest, err := q.AttemptIsLatest(ctx, db.AttemptIsLatestParams{JobID: b.JobID, Token: b.Token})
		if err != nil {
			return nil, nil, fmt.Errorf("append logs: %w", err)
		}
		checked[b.Token] = latest
		if !latest {
			if stale == nil {
				stale = map[int64]bool{}
			}
			stale[b.Token] = true
			s.staleReports.Add(1)
		}
	}
	return stale, jobs, nil
}

// TruncationMarker is the system line stored in place of a job's output
// past its log size cap.
func TruncationMarker(limit int64) string {
	return fmt.Sprintf("hodei: log truncated: the job's output exceeded the limit of %d bytes; later output is discarded", limit)
}

// applyLogCap enforces the per-job log size cap: batches that would take
// a job past it are replaced, once, by a truncation marker; later ones are
// dropped (and still acknowledged). The jobs' byte counts are updated in
// the same transaction.
func (s *Store) applyLogCap(ctx context.Context, q *db.Queries, in []LogBatchIn) ([]LogBatchIn, map[string]bool, error) {
	ids := make([]uuid.UUID, len(in))
	for i, b := range in {
		ids[i] = b.JobID
	}
	rows, err := q.LogBudget(ctx, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("log budget: %w", err)
	}
	type budget struct {
		job       uuid.UUID
		bytes     int64
		truncated bool
		changed   bool
	}
	byJob := map[uuid.UUID]*budget{}
	byToken := map[int64]*budget{}
	for _, r := range rows {
		b := byJob[r.JobID]
		if b == nil {
			b = &budget{job: r.JobID, bytes: r.LogBytes, truncated: r.LogTruncated}
			byJob[r.JobID] = b
		}
		byToken[r.Token] = b
	}
	out := in[:0:0]
	for _, b := range in {
		bud := byToken[b.Token]
		if bud == nil || bud.job != b.JobID { // not the job's latest attempt: the insert reports it stale
			out = append(out, b)
			continue
		}
		switch {
		case bud.truncated:
			continue
		case bud.bytes+int64(len(b.Data)) > s.logCap:
			marker, err := proto.Marshal(&hodeiv1.LogBatch{Lines: []*hodeiv1.LogLine{{Stream: hodeiv1.LogStream_LOG_STREAM_SYSTEM,
				Data: []byte(TruncationMarker(s.logCap)), Time: timestamppb.New(s.now())}}})
			if err != nil {
				return nil, nil, err
			}
			b.Data, b.Lines = marker, 1
			bud.truncated = true
		}
		bud.bytes += int64(len(b.Data))
		bud.changed = true
		out = append(out, b)
	}
	var p db.SetLogBudgetParams
	jobs := map[string]bool{}
	for _, b := range byJob {
		jobs[b.job.String()] = true
		if b.changed {
			p.Ids = append(p.Ids, b.job)
			p.Bytes = append(p.Bytes, b.bytes)
			p.Truncated = append(p.Truncated, b.truncated)
		}
	}
	if len(p.Ids) > 0 {
		if err := q.SetLogBudget(ctx, p); err != nil {
			return nil, nil, fmt.Errorf("log budget: %w", err)
		}
	}
	return out, jobs, nil
}

// Report is one message of an agent about an attempt: exactly one of
// Start, Logs and Finish.
type Report struct {
	JobID  uuid.UUID
	Token  int64
	Start  bool
	Logs   *LogBatchIn
	Finish *Result
}

// ReportOutcome is what ApplyReports did with a report.
type ReportOutcome struct {
	Stale      bool          // the token is no longer current: the report was rejected
	Outcome    Outcome       // for Finish
	StartDelay time.Duration // for Start: assignment to start
}

// ApplyReports applies an agent's reports in order in one transaction
// (group commit): consecutive log batches go in one statement. Stale
// reports are rejected individually; any other error rolls back all of
// them (the agent re-sends what was not acknowledged).
func (s *Store) ApplyReports(ctx context.Context, reports []Report) ([]ReportOutcome, error) {
	out := make([]ReportOutcome, len(reports))
	// A start whose result is in the same batch is applied with the result
	// (one write of the attempt and the job instead of two).
	reports = slices.Clone(reports)
	finishing := map[int64]int{}
	for i, r := range reports {
		if r.Finish != nil {
			finishing[r.Token] = i
		}
	}
	err := s.inTxDeferred(ctx, func(tx db.DBTX, later db.DBTX) error {
		q := db.New(tx)
		touched := map[string]bool{} // jobs with new output
		// Attempts ended by this batch, with their new state: their
		// writes are deferred, so a later read in the batch would not
		// see them yet.
		seen := map[int64]job.State{}
		// Starts first, together: a start only has to precede its own
		// attempt's logs and result, which come after it in any case.
		var starts []int
		for i, r := range reports {
			if r.Start && finishing[r.Token] <= i {
				starts = append(starts, i)
			}
		}
		if err := s.startBatch(ctx, q, later, reports, starts, out); err != nil {
			return err
		}
		for i := 0; i < len(reports); {
			r := reports[i]
			switch {
			case r.Logs != nil:
				j := i
				var batch []LogBatchIn
				for ; j < len(reports) && reports[j].Logs != nil; j++ {
					batch = append(batch, *reports[j].Logs)
				}
				stale, jobs, err := s.appendLogBatches(ctx, q, batch)
				if err != nil {
					return err
				}
				for id := range jobs {
					touched[id] = true
				}
				for k := i; k < j; k++ {
					out[k].Stale = stale[reports[k].Token]
				}
				i = j
				continue
			case r.Start && finishing[r.Token] > i:
				f := *reports[finishing[r.Token]].Finish
				f.StartedAt = s.now()
				reports[finishing[r.Token]].Finish = &f
			case r.Start:
				// applied before the loop (startBatch)
			case r.Finish != nil:
				// Results in a row (with the starts merged into them) are
				// applied together.
				j := i
				var idx []int
				for ; j < len(reports); j++ {
					if reports[j].Finish != nil {
						idx = append(idx, j)
					} else if !(reports[j].Start && finishing[reports[j].Token] > j) {
						break
					}
				}
				if err := s.finishBatch(ctx, tx, q, later, reports, idx, out, seen); err != nil {
					return err
				}
				i = j
				continue
			}
			i++
		}
		return notifyLogs(ctx, db.New(later), touched)
	})
	return out, err
}

// RetryJob starts a new attempt of a job in a final state: the job is
// queued again with room for as many attempts as its policy allows.
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
		more := max(j.Spec.Retry.MaxAttempts, 1)
		now := s.now()
		if err := q.RequeueJob(ctx, db.RequeueJobParams{Now: now, MaxAttempts: int32(j.Attempt + more), ID: uid}); err != nil {
			return err
		}
		_, err = eventbus.Publish(ctx, tx, eventbus.New("job", id, &hodeiv1.JobRetryScheduled{JobId: id, NextAttempt: int32(j.Attempt + 1),
			RunAt: timestamppb.New(now), Delay: durationpb.New(0)}))
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
	overdue, err := s.Q.OverdueAttempts(ctx, db.OverdueAttemptsParams{MarginSeconds: margin.Seconds(), Now: &now})
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
// cutoff (their replica died, or they vanished) as worker_lost.
func (s *Store) ExpireSilentWorkers(ctx context.Context, cutoff time.Time) ([]string, error) {
	ids, err := s.Q.ExpiredWorkers(ctx, &cutoff)
	if err != nil {
		return nil, fmt.Errorf("expired workers: %w", err)
	}
	var out []string
	for _, id := range ids {
		if _, err := s.WorkerGone(ctx, id.String(), "disconnected", "no heartbeat within the lease", false); err != nil {
			return out, err
		}
		out = append(out, id.String())
	}
	return out, nil
}

// reportJobs lists the jobs of reports[idx...].
func reportJobs(reports []Report, idx []int) []uuid.UUID {
	ids := make([]uuid.UUID, len(idx))
	for k, i := range idx {
		ids[k] = reports[i].JobID
	}
	return ids
}

// startBatch records the starts reports[idx...] with set-based writes.
func (s *Store) startBatch(ctx context.Context, q *db.Queries, later db.DBTX, reports []Report, idx []int, out []ReportOutcome) error {
	if len(idx) == 0 {
		return nil
	}
	rows, err := q.LockAttempts(ctx, reportJobs(reports, idx))
	if err != nil {
		return fmt.Errorf("lock attempts: %w", err)
	}
	byToken := make(map[int64]db.LockAttemptsRow, len(rows))
	for _, r := range rows {
		byToken[r.Token] = r
	}
	now := s.now()
	var run []int64
	var runJobs []uuid.UUID
	var events []eventbus.Event
	for _, i := range idx {
		a, ok := byToken[reports[i].Token] // only a job's latest attempt can start
		st := job.State(a.JobState)
		if !ok || a.JobID != reports[i].JobID || (st != job.StateAssigned && st != job.StateRunning) {
			s.staleReports.Add(1)
			out[i].Stale = true
			continue
		}
		if a.State != string(job.StateAssigned) || slices.Contains(run, a.Token) {
			continue // repeated report
		}
		run, runJobs = append(run, a.Token), append(runJobs, a.JobID)
		out[i].StartDelay = now.Sub(a.AssignedAt)
		events = append(events, eventbus.New("job", a.JobID.String(), &hodeiv1.JobStarted{JobId: a.JobID.String(), Attempt: a.Number, WorkerId: a.WorkerID.String()}))
	}
	if len(run) == 0 {
		return nil
	}
	if err := db.New(later).StartJobAttempts(ctx, db.StartJobAttemptsParams{Now: now, JobIds: runJobs, Tokens: run}); err != nil {
		return err
	}
	return eventbus.Append(ctx, later, events...)
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
	now := s.now()
	var fj db.FinishJobsParams
	var events []eventbus.Event
	var slow []int
	for _, i := range idx {
		r := *reports[i].Finish
		a, ok := byToken[reports[i].Token]
		switch {
		case !ok, a.JobID != reports[i].JobID, a.FinishedAt != nil && a.FailureClass != nil && *a.FailureClass == string(job.FailureWorkerLost):
			s.staleReports.Add(1)
			out[i].Stale = true
			continue
		case a.FinishedAt != nil:
			out[i].Outcome = Outcome{JobID: a.JobID.String(), Duplicate: true, State: job.State(a.State)}
			continue
		case seen[a.Token] != "":
			out[i].Outcome = Outcome{JobID: a.JobID.String(), Duplicate: true, State: seen[a.Token]}
			continue
		}
		st := job.State(a.JobState)
		if st != job.StateAssigned && st != job.StateRunning {
			s.staleReports.Add(1)
			out[i].Stale = true
			continue
		}
		j := job.Job{ID: a.JobID.String(), State: st, Attempt: int(a.Number), MaxAttempts: int(a.MaxAttempts)}
		if needsRetryPolicy(r) {
			// Decoded apart so that j stays off the heap when it is not.
			rp := new(job.RetryPolicy)
			if err := json.Unmarshal(a.Retry, rp); err != nil {
				return fmt.Errorf("decode retry policy of job %s: %w", a.JobID, err)
			}
			j.Spec.Retry = *rp
		}
		d, err := decide(j, a.Number, r, now)
		if err != nil {
			return err
		}
		if d.next == job.StateRetrying {
			slow = append(slow, i) // needs the queue: one by one below
			continue
		}
		seen[a.Token] = d.attemptState
		if !r.StartedAt.IsZero() && a.State == string(job.StateAssigned) {
			events = append(events, eventbus.New("job", j.ID, &hodeiv1.JobStarted{JobId: j.ID, Attempt: a.Number, WorkerId: a.WorkerID.String()}))
		} else {
			r.StartedAt = time.Time{}
		}
		events = append(events, d.events...)
		class := ""
		if d.r.Class != job.FailureNone {
			class = string(d.r.Class)
		}
		fj.JobIds = append(fj.JobIds, a.JobID)
		fj.Tokens = append(fj.Tokens, a.Token)
		fj.States = append(fj.States, string(d.next)) // the attempt's state too: not a retry
		fj.ExitCodes = append(fj.ExitCodes, int32(d.r.ExitCode))
		fj.Signals = append(fj.Signals, d.r.Signal)
		fj.Classes = append(fj.Classes, class)
		fj.Messages = append(fj.Messages, d.r.Message)
		fj.StartedAts = append(fj.StartedAts, r.StartedAt)
		out[i].Outcome = Outcome{JobID: j.ID, State: d.next}
	}
	if len(fj.Tokens) > 0 {
		fj.Now = now
		w := db.New(later)
		// The statement joins the rows with the batch. A nested loop
		// would rescan the whole batch for each row: quadratic, and it is
		// the plan PostgreSQL caches for a table that was nearly empty and
		// never analyzed when the statement was first planned (a fresh
		// install under load: 270 ms for one batch of 744 results). So the
		// join is a hash join, whatever the statistics say.
		if _, err := later.Exec(ctx, "set local enable_nestloop = off"); err != nil {
			return err
		}
		if err := w.FinishJobs(ctx, fj); err != nil {
			return fmt.Errorf("finish jobs: %w", err)
		}
		if _, err := later.Exec(ctx, "set local enable_nestloop = default"); err != nil {
			return err
		}
		if err := eventbus.Append(ctx, later, events...); err != nil {
			return err
		}
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
