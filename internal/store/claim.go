package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

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
	ReadyAt   time.Time // since when the attempt could run: its retry's time, else the job's creation
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
	as, _, err := s.ClaimSlots(ctx, w, slots, nil)
	return as, err
}

// Cursor is a position in dispatch order (priority, then id) where a
// claim for workers of one kind starts: after the last job claimed for
// them, or at the end when a claim found nothing more they can run. A
// claim from it does not walk again over the jobs claimed before, whose
// dead index entries stay until a vacuum removes them, nor over the jobs
// these workers cannot run. A job that becomes ready before the cursor
// (an earlier id committed late, a retry, a job a claim skipped while
// another transaction held it) is found only once the caller moves its
// cursor back before it (Before) or drops it (nil: the head).
type Cursor struct {
	Priority int32
	ID       uuid.UUID
}

// End is the cursor after every job.
var End = Cursor{Priority: -job.MaxPriority - 1}

// Before reports whether c comes before d in dispatch order.
func (c Cursor) Before(d Cursor) bool {
	if c.Priority != d.Priority {
		return c.Priority > d.Priority
	}
	return bytes.Compare(c.ID[:], d.ID[:]) < 0
}

// JustBefore is the cursor just before the job at c: a claim from it
// starts with that job.
func (c Cursor) JustBefore() Cursor {
	id := c.ID
	for i := len(id) - 1; i >= 0; i-- { // 128-bit big-endian, uuid order in PostgreSQL
		id[i]--
		if id[i] != 0xff {
			break
		}
	}
	return Cursor{Priority: c.Priority, ID: id}
}

// ClaimSlots claims jobs for a list of free slots (a worker id per slot,
// in the order jobs should go to them) of workers that share labels,
// image and per-job limits (given by like), in one statement and one
// transaction. Slots of workers that are no longer connected get nothing.
// The walk starts after from (nil: at the head); the cursor returned is
// the last job claimed, End when the walk reached the end of the ready
// jobs (it found fewer than the usable slots), or from when no slot was
// usable.
func (s *Store) ClaimSlots(ctx context.Context, like WorkerMatch, slots []string, from *Cursor) ([]Assignment, *Cursor, error) {
	ids := make([]uuid.UUID, len(slots))
	for i, id := range slots {
		u, err := uuid.Parse(id)
		if err != nil {
			return nil, from, fmt.Errorf("claim: worker id: %w", err)
		}
		ids[i] = u
	}
	l, _ := json.Marshal(nonNil(like.Labels))
	after := Cursor{Priority: job.MaxPriority + 1} // above every job: the head
	if from != nil {
		after = *from
	}
	var out []Assignment
	var next *Cursor
	err := s.inTxDeferred(ctx, func(tx db.DBTX, later db.DBTX) error {
		out, next = nil, from
		rows, err := db.New(tx).ClaimJobs(ctx, db.ClaimJobsParams{WorkerIds: ids, Now: s.now(), WorkerLabels: l, WorkerImage: like.Image,
			WorkerCpuMillis: like.CPUMillis, WorkerMemoryMib: like.MemoryMiB, AfterPriority: int64(after.Priority), AfterID: after.ID})
		if err != nil {
			return err
		}
		usable := 0
		events := make([]eventbus.Event, 0, len(rows))
		out = make([]Assignment, 0, len(rows))
		for _, r := range rows {
			usable = int(r.Usable)
			if !r.ID.Valid { // the one row of a claim that took nothing
				continue
			}
			id := uuid.UUID(r.ID.Bytes)
			out = append(out, Assignment{JobID: id.String(), Attempt: int(*r.Attempt), Token: *r.Token, CreatedAt: *r.CreatedAt, ReadyAt: *r.ReadyAt,
				WorkerID: uuid.UUID(r.WorkerID.Bytes).String()})
			a := &out[len(out)-1]
			if err := json.Unmarshal(r.Spec, &a.Spec); err != nil {
				return fmt.Errorf("decode spec of job %s: %w", id, err)
			}
			events = append(events, jobAssigned(a))
			if c := (Cursor{Priority: *r.Priority, ID: id}); next == nil || next.Before(c) {
				next = &c
			}
		}
		switch {
		case usable == 0:
			next = from
		case len(out) < usable:
			end := End
			next = &end
		}
		if len(out) == 0 {
			return nil
		}
		return eventbus.Append(ctx, later, events...)
	})
	if err != nil {
		return nil, from, fmt.Errorf("claim jobs: %w", err)
	}
	return out, next, nil
}

// Place is where a waiting job stands in dispatch order, with the labels
// and image a worker needs to run it.
type Place struct {
	Pos    Cursor
	Labels map[string]string
	Image  string
}

// RetryPlaces returns the places of the jobs among ids that wait to be
// claimed (queued or retrying); the others are left out.
func (s *Store) RetryPlaces(ctx context.Context, ids []uuid.UUID) ([]Place, error) {
	rows, err := s.q.RetryPlaces(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("retry places: %w", err)
	}
	out := make([]Place, len(rows))
	for i, r := range rows {
		out[i] = Place{Pos: Cursor{Priority: r.Priority, ID: r.ID}, Image: r.Image}
		if err := json.Unmarshal(r.Labels, &out[i].Labels); err != nil {
			return nil, fmt.Errorf("retry places: labels of job %s: %w", r.ID, err)
		}
	}
	return out, nil
}

// DelayedRetry is a retry waiting out its backoff until RunAt.
type DelayedRetry struct {
	ID    uuid.UUID
	RunAt time.Time
}

// DelayedRetries lists the retries waiting out a backoff after now,
// earliest first (an index range of the retrying jobs).
func (s *Store) DelayedRetries(ctx context.Context, now time.Time) ([]DelayedRetry, error) {
	rows, err := s.q.DelayedRetries(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("delayed retries: %w", err)
	}
	out := make([]DelayedRetry, 0, len(rows))
	for _, r := range rows {
		if r.RunAt != nil {
			out = append(out, DelayedRetry{ID: r.ID, RunAt: *r.RunAt})
		}
	}
	return out, nil
}

// FirstReady returns the position of the first job in dispatch order that
// workers like these can run now, or nil when there is none. It locks
// nothing: a job another transaction holds is found too.
func (s *Store) FirstReady(ctx context.Context, like WorkerMatch) (*Cursor, error) {
	l, _ := json.Marshal(nonNil(like.Labels))
	rows, err := s.q.FirstReadyJob(ctx, db.FirstReadyJobParams{Now: s.now(), WorkerLabels: l, WorkerImage: like.Image,
		WorkerCpuMillis: like.CPUMillis, WorkerMemoryMib: like.MemoryMiB})
	if err != nil {
		return nil, fmt.Errorf("first ready job: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	return &Cursor{Priority: rows[0].Priority, ID: rows[0].ID}, nil
}
