package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-dev/hodei/internal/store/db"
)

// DeleteFinishedJobs deletes at most limit jobs that finished before
// cutoff, oldest first, with their attempts and log batches (ON DELETE
// CASCADE), in one transaction, and returns how many it deleted. Their
// events go with the event retention; their idempotency keys are free
// again.
func (s *Store) DeleteFinishedJobs(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	n, err := s.q.DeleteFinishedJobs(ctx, db.DeleteFinishedJobsParams{BeforeID: idAt(cutoff), Cutoff: cutoff, MaxRows: int32(limit)})
	if err != nil {
		return n, fmt.Errorf("delete finished jobs: %w", err)
	}
	return n, nil
}

// idAt is the smallest job id of the millisecond t (uuidV7's layout with
// every other bit zero): every job created before t has a smaller id.
func idAt(t time.Time) uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[0:8], uint64(t.UnixMilli())<<16)
	return u
}
