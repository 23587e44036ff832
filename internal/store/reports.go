package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/db"
)

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
		events = append(events, jobStarted(a.JobID.String(), a.Number, a.WorkerID.String()))
	}
	if len(run) == 0 {
		return nil
	}
	if err := db.New(later).StartJobAttempts(ctx, db.StartJobAttemptsParams{Now: now, JobIds: runJobs, Tokens: run}); err != nil {
		return err
	}
	return eventbus.Append(ctx, later, events...)
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
	_, err = eventbus.Publish(ctx, tx, jobStarted(a.JobID.String(), a.Number, a.WorkerID.String()))
	return now.Sub(a.AssignedAt), err
}

// StaleReports counts reports rejected for a stale fencing token.
func (s *Store) StaleReports() int64 { return s.staleReports.Load() }
