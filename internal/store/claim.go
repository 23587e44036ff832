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

// Cursor is a position in dispatch order (priority, then id): the last
// job claimed for workers of one kind. A claim that starts after it does
// not step again over the jobs claimed before, whose dead index entries
// stay until a vacuum removes them. A job that becomes ready behind the
// cursor (an earlier id committed late, a retry, a job another claim
// skipped while locked) is found only by a claim from the head (nil):
// the caller drops its cursor when that may have happened.
type Cursor struct {
	Priority int32
	ID       uuid.UUID
}

// Before reports whether c comes before d in dispatch order.
func (c Cursor) Before(d Cursor) bool {
	if c.Priority != d.Priority {
		return c.Priority > d.Priority
	}
	return bytes.Compare(c.ID[:], d.ID[:]) < 0
}

// ClaimSlots claims jobs for a list of free slots (a worker id per slot,
// in the order jobs should go to them) of workers that share labels,
// image and per-job limits (given by like), in one statement and one
// transaction. Slots of workers that are no longer connected get nothing.
// The walk starts after from (nil: at the head); the cursor returned is
// the last job claimed, or from when none was.
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
	var last *Cursor
	err := s.inTxDeferred(ctx, func(tx db.DBTX, later db.DBTX) error {
		out, last = nil, nil
		rows, err := db.New(tx).ClaimJobs(ctx, db.ClaimJobsParams{WorkerIds: ids, Now: s.now(), WorkerLabels: l, WorkerImage: like.Image,
			WorkerCpuMillis: like.CPUMillis, WorkerMemoryMib: like.MemoryMiB, AfterPriority: int64(after.Priority), AfterID: after.ID})
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		events := make([]eventbus.Event, 0, len(rows))
		out = make([]Assignment, 0, len(rows))
		for _, r := range rows {
			out = append(out, Assignment{JobID: r.ID.String(), Attempt: int(r.Attempt), Token: r.Token, CreatedAt: r.CreatedAt, ReadyAt: r.ReadyAt, WorkerID: r.WorkerID.String()})
			a := &out[len(out)-1]
			if err := json.Unmarshal(r.Spec, &a.Spec); err != nil {
				return fmt.Errorf("decode spec of job %s: %w", r.ID, err)
			}
			events = append(events, jobAssigned(a))
			if c := (Cursor{Priority: r.Priority, ID: r.ID}); last == nil || last.Before(c) {
				last = &c
			}
		}
		return eventbus.Append(ctx, later, events...)
	})
	if err != nil {
		return nil, from, fmt.Errorf("claim jobs: %w", err)
	}
	if last == nil {
		return out, from, nil
	}
	return out, last, nil
}
