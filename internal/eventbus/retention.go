package eventbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hodei-dev/hodei/internal/store/db"
)

// pruneBatch is the number of event rows (publishes) RunRetention deletes
// per statement.
const pruneBatch = 1000

// Prune deletes events created more than olderThan ago that every
// subscriber's cursor has passed and no pending dead letter refers to, in
// statements that delete batch rows of event_batches (the events of one
// publish; default 1000) until a statement deletes fewer.
// It returns the number of events deleted, also when it fails part-way.
//
// "Every subscriber" means every cursor in the database: a subscriber that
// was removed from the code keeps its cursor, and holds back pruning, until
// its row in event_cursors is deleted.
func (b *Bus) Prune(ctx context.Context, olderThan time.Duration, batch int) (int64, error) {
	if batch <= 0 {
		batch = pruneBatch
	}
	before := b.cfg.Now().Add(-olderThan)
	var total int64
	for {
		n, err := db.New(planEach{b.pool}).PruneEvents(ctx, db.PruneEventsParams{Before: before, MaxRows: int32(batch)})
		total += n.Events
		if err != nil {
			return total, fmt.Errorf("prune events: %w", err)
		}
		if n.Batches < int64(batch) {
			return total, nil
		}
	}
}

// RunRetention prunes delivered events older than olderThan now and then
// every interval, until ctx ends. A failed prune is logged and retried at
// the next tick.
func (b *Bus) RunRetention(ctx context.Context, every, olderThan time.Duration) error {
	if every <= 0 || olderThan < 0 {
		return errors.New("event retention: interval must be positive and age not negative")
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := b.Prune(ctx, olderThan, pruneBatch)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			b.log.Warn("event retention failed", "err", err, "deleted", n)
		} else if n > 0 {
			b.log.Info("events pruned", "deleted", n, "older_than", olderThan)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
