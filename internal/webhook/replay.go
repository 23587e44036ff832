package webhook

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
)

// MaxListed is the most failed deliveries Failures returns.
const MaxListed = 1000

// Failures lists the failed deliveries of w (the events it was sent
// MaxAttempts times without success), oldest first, at most limit
// (0: 100; at most MaxListed).
func Failures(ctx context.Context, bus *eventbus.Bus, w store.Webhook, limit int) ([]eventbus.DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	return bus.ListDeadLetters(ctx, store.WebhookSubscriber(w.Name), min(limit, MaxListed))
}

// ReplayResult is what Replay did.
type ReplayResult struct {
	Delivered []int64 // event ids sent successfully, in order
	// FailedEventID failed again (0: none did) because of Err; it is still
	// a failed delivery. NotTried were not sent because of it.
	FailedEventID int64
	Err           string
	NotTried      []int64
}

// Replay sends failed deliveries of w again, oldest first, one attempt
// each: those of eventIDs, or every one with all. It stops at the first
// that fails again, which stays a failed delivery with the attempt
// counted. An event id that is not a failed delivery of w is an error
// wrapping job.ErrNotFound, and nothing is sent.
//
// When this replica runs w's subscriber (the leader), its handler sends
// them, one at a time with its other events; otherwise s does.
func (s *Sender) Replay(ctx context.Context, bus *eventbus.Bus, w store.Webhook, eventIDs []int64, all bool) (ReplayResult, error) {
	var res ReplayResult
	sub := store.WebhookSubscriber(w.Name)
	pending, err := s.st.PendingDeadLetters(ctx, sub)
	if err != nil {
		return res, err
	}
	if !all {
		pending, err = selectEvents(pending, eventIDs, w.Name)
		if err != nil {
			return res, err
		}
	}
	cfg := eventbus.SubscriberConfig{Name: sub, MaxAttempts: 1}
	h := s.Handler(w)
	for i, p := range pending {
		err := bus.ReplayWith(ctx, p.ID, cfg, h)
		if err == nil {
			res.Delivered = append(res.Delivered, p.EventID)
			continue
		}
		if !errors.Is(err, eventbus.ErrStillFailing) {
			return res, fmt.Errorf("replay event %d to webhook %s: %w", p.EventID, w.Name, err)
		}
		res.FailedEventID, res.Err = p.EventID, lastError(ctx, bus, sub, p.EventID)
		for _, q := range pending[i+1:] {
			res.NotTried = append(res.NotTried, q.EventID)
		}
		break
	}
	return res, nil
}

// selectEvents returns the dead letters of eventIDs, oldest first.
func selectEvents(pending []store.PendingDeadLetter, eventIDs []int64, name string) ([]store.PendingDeadLetter, error) {
	if len(eventIDs) == 0 {
		return nil, &job.FieldError{Field: "event_ids", Rule: "name at least one event, or replay all"}
	}
	var out []store.PendingDeadLetter
	for _, id := range eventIDs {
		i := slices.IndexFunc(pending, func(p store.PendingDeadLetter) bool { return p.EventID == id })
		if i < 0 {
			return nil, fmt.Errorf("event %d is not a failed delivery of webhook %s: %w", id, name, job.ErrNotFound)
		}
		if !slices.Contains(out, pending[i]) {
			out = append(out, pending[i])
		}
	}
	slices.SortFunc(out, func(a, b store.PendingDeadLetter) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// lastError is the error a failed delivery was parked with.
func lastError(ctx context.Context, bus *eventbus.Bus, sub string, eventID int64) string {
	dls, err := bus.ListDeadLetters(ctx, sub, MaxListed)
	if err != nil {
		return "failed again (" + err.Error() + ")"
	}
	for _, d := range dls {
		if d.Event.ID == eventID {
			return d.LastError
		}
	}
	return "failed again"
}
