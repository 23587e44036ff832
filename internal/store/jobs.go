package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// createHook, when set (tests only), runs inside CreateJob's transaction
// after each stage ("job", "event"); an error aborts it.
type createHook func(stage string) error

// CreateJob validates spec and stores the job (state queued: that is the
// dispatch queue) and its JobCreated event in one transaction. With an idempotency key that was
// used before, it returns the earlier job and existing=true.
func (s *Store) CreateJob(ctx context.Context, spec job.Spec, defaultMaxAttempts int) (job.Job, bool, error) {
	return s.CreateJobAs(ctx, "", spec, defaultMaxAttempts)
}

// CreateJobAs is CreateJob recording submitter (an API token's name; ""
// for none) as the job's submitter.
func (s *Store) CreateJobAs(ctx context.Context, submitter string, spec job.Spec, defaultMaxAttempts int) (job.Job, bool, error) {
	jobs, existing, err := s.CreateJobsAs(ctx, submitter, []job.Spec{spec}, defaultMaxAttempts)
	if err != nil {
		var fe *job.FieldError
		if errors.As(err, &fe) { // one spec: name its field without the index
			fe.Field = strings.TrimPrefix(fe.Field, "specs[0].")
		}
		return job.Job{}, false, err
	}
	return jobs[0], existing[0], nil
}

// CreateJobs stores many jobs in one transaction: all rows, queue rows
// and JobCreated events, in order (FIFO among them). If one spec is
// invalid nothing is written and the error names it (specs[i].field).
// Specs with an idempotency key used before (or earlier in the same call)
// return that job with existing set. A spec's retry policy gets the
// defaults of its type (JobType) for the fields it leaves unset, and
// max_attempts defaultMaxAttempts when neither sets one.
func (s *Store) CreateJobs(ctx context.Context, specs []job.Spec, defaultMaxAttempts int) ([]job.Job, []bool, error) {
	return s.CreateJobsAs(ctx, "", specs, defaultMaxAttempts)
}

// CreateJobsAs is CreateJobs recording submitter (an API token's name;
// "" for none) as the submitter of the jobs it creates.
func (s *Store) CreateJobsAs(ctx context.Context, submitter string, specs []job.Spec, defaultMaxAttempts int) ([]job.Job, []bool, error) {
	for i := range specs {
		if err := specs[i].Validate(); err != nil {
			var fe *job.FieldError
			if errors.As(err, &fe) {
				return nil, nil, &job.FieldError{Field: fmt.Sprintf("specs[%d].%s", i, fe.Field), Rule: fe.Rule}
			}
			return nil, nil, err
		}
	}
	specs, err := s.withTypeDefaults(ctx, specs)
	if err != nil {
		return nil, nil, err
	}
	for try := 0; ; try++ {
		jobs, existing, err := s.createJobs(ctx, submitter, specs, defaultMaxAttempts)
		var pgErr *pgconn.PgError
		if try == 0 && errors.As(err, &pgErr) && pgErr.Code == "23505" {
			continue // a concurrent submission used one of the keys: it is existing now
		}
		return jobs, existing, err
	}
}

func (s *Store) createJobs(ctx context.Context, submitter string, specs []job.Spec, defaultMaxAttempts int) ([]job.Job, []bool, error) {
	jobs := make([]job.Job, len(specs))
	existing := make([]bool, len(specs))
	// Keys used before.
	var keys []string
	for _, sp := range specs {
		if sp.IdempotencyKey != "" {
			keys = append(keys, sp.IdempotencyKey)
		}
	}
	byKey := map[string]job.Job{}
	if len(keys) > 0 {
		rows, err := s.q.JobsByIdempotencyKeys(ctx, keys)
		if err != nil {
			return nil, nil, fmt.Errorf("create jobs: %w", err)
		}
		for _, r := range rows {
			j, err := s.withAttempts(ctx, r)
			if err != nil {
				return nil, nil, err
			}
			byKey[*r.IdempotencyKey] = j
		}
	}
	now, ids := s.ids.next(s.now().UTC().Truncate(time.Microsecond), len(specs))
	var ins db.InsertJobsParams
	var events []eventbus.Event
	ins.Now = now
	if submitter != "" {
		ins.SubmittedBy = &submitter
	}
	for i, spec := range specs {
		if k := spec.IdempotencyKey; k != "" {
			if j, ok := byKey[k]; ok {
				jobs[i], existing[i] = j, true
				continue
			}
		}
		specJSON, err := json.Marshal(spec)
		if err != nil {
			return nil, nil, err
		}
		labels, _ := json.Marshal(nonNil(spec.Labels))
		id := ids[i]
		maxAttempts := spec.Retry.MaxAttempts
		if maxAttempts == 0 {
			maxAttempts = max(defaultMaxAttempts, 1)
		}
		ins.Ids = append(ins.Ids, id)
		ins.Names = append(ins.Names, spec.Name)
		ins.Types = append(ins.Types, spec.Type)
		ins.Specs = append(ins.Specs, specJSON)
		ins.Priorities = append(ins.Priorities, spec.Priority)
		ins.Images = append(ins.Images, spec.Image)
		ins.Labels = append(ins.Labels, labels)
		ins.Keys = append(ins.Keys, spec.IdempotencyKey)
		ins.MaxAttempts = append(ins.MaxAttempts, int32(maxAttempts))
		ins.CpuMillis = append(ins.CpuMillis, spec.CPUMillis)
		ins.MemoryMib = append(ins.MemoryMib, spec.MemoryMiB)
		events = append(events, jobCreated(id.String(), &spec))
		jobs[i] = job.Job{ID: id.String(), Spec: spec, State: job.StateQueued, MaxAttempts: maxAttempts, CreatedAt: now, UpdatedAt: now, SubmittedBy: submitter}
		if spec.IdempotencyKey != "" {
			byKey[spec.IdempotencyKey] = jobs[i] // a repeat later in this call
		}
	}
	if len(ins.Ids) == 0 {
		return jobs, existing, nil
	}
	step := func(stage string) error {
		if s.createHook != nil {
			return s.createHook(stage)
		}
		return nil
	}
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := q.InsertJobs(ctx, ins); err != nil {
			return fmt.Errorf("insert jobs: %w", err)
		}
		if err := step("job"); err != nil {
			return err
		}
		if _, err := eventbus.Publish(ctx, tx, events...); err != nil {
			return err
		}
		return step("event")
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create jobs: %w", err)
	}
	s.log.Debug("jobs created", "jobs", len(ins.Ids))
	return jobs, existing, nil
}

// GetJob returns a job with its attempts.
func (s *Store) GetJob(ctx context.Context, id string) (job.Job, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return job.Job{}, &job.FieldError{Field: "id", Rule: "must be a job id (UUID)"}
	}
	row, err := s.q.GetJob(ctx, uid)
	if err != nil {
		if IsNoRows(err) {
			return job.Job{}, fmt.Errorf("job %s: %w", id, job.ErrNotFound)
		}
		return job.Job{}, fmt.Errorf("get job %s: %w", id, err)
	}
	return s.withAttempts(ctx, row)
}

func (s *Store) withAttempts(ctx context.Context, row db.Job) (job.Job, error) {
	j, err := fromRow(row)
	if err != nil {
		return j, err
	}
	attempts, err := s.q.ListAttempts(ctx, row.ID)
	if err != nil {
		return j, fmt.Errorf("list attempts: %w", err)
	}
	for _, a := range attempts {
		j.Attempts = append(j.Attempts, attemptFromRow(a))
	}
	return j, nil
}

// ListFilter selects jobs for ListJobs.
type ListFilter struct {
	States        []job.State
	Labels        map[string]string
	Type          string
	CreatedAfter  time.Time
	CreatedBefore time.Time
	// Text keeps jobs whose name, command (its arguments joined by
	// spaces) or script contains it, in any case; at most MaxListText
	// characters.
	Text string
	// ScanLimit bounds how many jobs a call with Text examines; 0 is
	// DefaultScanLimit.
	ScanLimit int
	// AfterID is the cursor: the last job of the previous page, or the
	// last job the previous text search examined.
	AfterID string
	Limit   int
}

const (
	// MaxListText is the longest text ListJobs searches for, in characters.
	MaxListText = 200
	// DefaultScanLimit is how many jobs one text search examines at most:
	// a search costs at most this many rows read, whatever the table's
	// size, and continues from where it stopped on the next call.
	DefaultScanLimit = 20_000
)

// JobPage is one page of ListJobs.
type JobPage struct {
	Jobs []job.Job
	// More says that jobs after this page may match; the next page starts
	// below Next.
	More bool
	Next JobPos
	// Bounded is set when a text search examined its ScanLimit of jobs
	// before it filled the page: Next is then the last job it examined,
	// not the page's last, and jobs created before Next.CreatedAt were
	// not examined yet.
	Bounded bool
}

// JobPos is a place in the listing: a job's id and creation time.
type JobPos struct {
	ID        string
	CreatedAt time.Time
}

// ListJobs returns one page of jobs, newest first; attempts are not
// loaded. With a text it examines at most f.ScanLimit jobs, so that a
// rare text costs a bounded read per call on any number of jobs.
func (s *Store) ListJobs(ctx context.Context, f ListFilter) (JobPage, error) {
	if n := utf8.RuneCountInString(f.Text); n > MaxListText {
		return JobPage{}, &job.FieldError{Field: "text", Rule: fmt.Sprintf("must be at most %d characters, not %d", MaxListText, n)}
	}
	states := []string{}
	for _, st := range f.States {
		states = append(states, string(st))
	}
	labels, _ := json.Marshal(nonNil(f.Labels))
	var after, before *time.Time
	if !f.CreatedAfter.IsZero() {
		after = &f.CreatedAfter
	}
	if !f.CreatedBefore.IsZero() {
		before = &f.CreatedBefore
	}
	// Bounds on the id for the creation-time filters (a job's id carries
	// its creation's millisecond, jobIDs; ids of jobs created before
	// migration 12 were drawn microseconds after it, hence a second of
	// slack on the upper bound), and the cursor.
	minID, beforeID := uuid.UUID{}, uuid.Max
	if !f.CreatedAfter.IsZero() {
		minID = uuidV7Floor(f.CreatedAfter.UnixMilli())
	}
	if !f.CreatedBefore.IsZero() {
		beforeID = uuidV7Floor(f.CreatedBefore.UnixMilli() + 1000)
	}
	if f.AfterID != "" {
		id, err := uuid.Parse(f.AfterID)
		if err != nil {
			return JobPage{}, &job.FieldError{Field: "page_token", Rule: "is not a valid page token"}
		}
		if bytes.Compare(id[:], beforeID[:]) < 0 {
			beforeID = id
		}
	}
	var page JobPage
	var err error
	if f.Text == "" {
		var rows []db.Job
		rows, err = s.q.ListJobs(ctx, db.ListJobsParams{Type: f.Type, MaxRows: int32(f.Limit), States: states, Labels: labels,
			CreatedAfter: after, CreatedBefore: before, MinID: minID, BeforeID: beforeID})
		if err == nil {
			page.Jobs, err = fromRows(rows)
		}
	} else {
		page, err = s.searchJobs(ctx, f, db.SearchJobsParams{Type: f.Type, MaxRows: int32(f.Limit), States: states, Labels: labels,
			CreatedAfter: after, CreatedBefore: before, MinID: minID, BeforeID: beforeID, Text: f.Text})
	}
	if err != nil {
		return JobPage{}, fmt.Errorf("list jobs: %w", err)
	}
	if !page.More && f.Limit > 0 && len(page.Jobs) == f.Limit {
		last := page.Jobs[len(page.Jobs)-1]
		page.More, page.Next = true, JobPos{ID: last.ID, CreatedAt: last.CreatedAt}
	}
	return page, nil
}

// searchJobs runs a text search and, when it did not fill the page, finds
// the last job it examined, both in one snapshot: a job submitted between
// the two reads must not move the place where the next call continues.
func (s *Store) searchJobs(ctx context.Context, f ListFilter, p db.SearchJobsParams) (JobPage, error) {
	scan := f.ScanLimit
	if scan <= 0 {
		scan = DefaultScanLimit
	}
	p.ScanRows = int32(scan)
	var page JobPage
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		q := db.New(tx)
		rows, err := q.SearchJobs(ctx, p)
		if err != nil {
			return err
		}
		if page.Jobs, err = fromRows(rows); err != nil {
			return err
		}
		if len(rows) == int(p.MaxRows) {
			return nil
		}
		end, err := q.JobScanEnd(ctx, db.JobScanEndParams{MinID: p.MinID, BeforeID: p.BeforeID, Skip: int32(scan - 1)})
		if err != nil || len(end) < 2 { // the search reached the last job
			return err
		}
		page.More, page.Bounded = true, true
		page.Next = JobPos{ID: end[0].ID.String(), CreatedAt: end[0].CreatedAt}
		return nil
	})
	return page, err
}

func fromRows(rows []db.Job) ([]job.Job, error) {
	out := make([]job.Job, 0, len(rows))
	for _, r := range rows {
		j, err := fromRow(r)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

func fromRow(r db.Job) (job.Job, error) {
	j := job.Job{ID: r.ID.String(), State: job.State(r.State), Attempt: int(r.Attempt), MaxAttempts: int(r.MaxAttempts),
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, Message: r.Message}
	if r.SubmittedBy != nil {
		j.SubmittedBy = *r.SubmittedBy
	}
	if err := json.Unmarshal(r.Spec, &j.Spec); err != nil {
		return j, fmt.Errorf("decode spec of job %s: %w", r.ID, err)
	}
	if r.FinishedAt != nil {
		j.FinishedAt = *r.FinishedAt
	}
	if r.RunAt != nil {
		j.RunAt = *r.RunAt
	}
	if r.ExitCode != nil {
		j.ExitCode = int(*r.ExitCode)
	}
	if r.FailureClass != nil {
		j.FailureClass = job.FailureClass(*r.FailureClass)
	}
	return j, nil
}

func attemptFromRow(a db.Attempt) job.Attempt {
	out := job.Attempt{Number: int(a.Number), WorkerID: a.WorkerID.String(), Token: a.Token, State: job.State(a.State),
		AssignedAt: a.AssignedAt, Signal: a.Signal, Message: a.Message}
	if a.StartedAt != nil {
		out.StartedAt = *a.StartedAt
	}
	if a.FinishedAt != nil {
		out.FinishedAt = *a.FinishedAt
	}
	if a.ExitCode != nil {
		out.ExitCode = int(*a.ExitCode)
	}
	if a.FailureClass != nil {
		out.FailureClass = job.FailureClass(*a.FailureClass)
	}
	return out
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func ptr[T any](v T) *T { return &v }

// CountActiveJobs counts jobs in each non-final state.
func (s *Store) CountActiveJobs(ctx context.Context) (map[string]int64, error) {
	rows, err := s.q.CountActiveJobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.State] = r.N
	}
	return out, nil
}

// NextRunAt is when the earliest job waiting out a retry's backoff after
// now becomes ready (the year 9999 when none is waiting).
func (s *Store) NextRunAt(ctx context.Context, now time.Time) (time.Time, error) {
	at, err := s.q.NextRunAt(ctx, now)
	if err != nil {
		return at, fmt.Errorf("next run time: %w", err)
	}
	return at, nil
}

// ReadyKinds groups the jobs ready to run at now by what they need, with
// how many need it. It reads every ready job.
func (s *Store) ReadyKinds(ctx context.Context, now time.Time) ([]db.ReadyKindsRow, error) {
	return s.q.ReadyKinds(ctx, now)
}

// ReadyJobs lists up to limit jobs ready to run at now, in dispatch order.
func (s *Store) ReadyJobs(ctx context.Context, now time.Time, limit int) ([]db.ReadyJobsRow, error) {
	rows, err := s.q.ReadyJobs(ctx, db.ReadyJobsParams{Now: now, MaxRows: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("ready jobs: %w", err)
	}
	return rows, nil
}

func durationpbOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
