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

// Webhook is an HTTP endpoint that is sent the events of its types (of
// jobs with its labels, when it has labels).
type Webhook struct {
	ID          int64 // new for every webhook, also one reusing a name
	Name        string
	URL         string
	Types       []string
	Labels      map[string]string
	Secret      string
	MaxAttempts int
	CreatedAt   time.Time
}

// ErrWebhookExists is returned by CreateWebhook for a name in use.
var ErrWebhookExists = errors.New("a webhook of that name exists")

// WebhookSubscriber is the name of the event bus subscriber that delivers
// to the webhook name: its cursor, dead letters and metric series.
func WebhookSubscriber(name string) string { return "webhook:" + name }

// CreateWebhook stores a webhook (validated by the caller) and publishes
// WebhookCreated; the webhook's subscriber starts after that event. It
// returns the webhook with its id and creation time.
func (s *Store) CreateWebhook(ctx context.Context, w Webhook) (Webhook, error) {
	w.CreatedAt = s.now().Truncate(time.Microsecond) // as stored
	labels, _ := json.Marshal(nonNil(w.Labels))
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		id, err := q.InsertWebhook(ctx, db.InsertWebhookParams{Name: w.Name, Url: w.URL, Types: w.Types, Labels: labels,
			Secret: w.Secret, MaxAttempts: int32(w.MaxAttempts), CreatedAt: w.CreatedAt})
		if IsNoRows(err) {
			return fmt.Errorf("create webhook %s: %w", w.Name, ErrWebhookExists)
		}
		if err != nil {
			return fmt.Errorf("create webhook %s: %w", w.Name, err)
		}
		w.ID = id
		ids, err := eventbus.Publish(ctx, tx, eventbus.New("webhook", w.Name, &hodeiv1.WebhookCreated{Name: w.Name, Types: w.Types, Labels: w.Labels}))
		if err != nil {
			return fmt.Errorf("create webhook %s: %w", w.Name, err)
		}
		if err := q.StartWebhookCursor(ctx, db.StartWebhookCursorParams{Subscriber: WebhookSubscriber(w.Name), EventID: ids[0]}); err != nil {
			return fmt.Errorf("create webhook %s: cursor: %w", w.Name, err)
		}
		return nil
	})
	return w, err
}

// ListWebhooks returns every webhook, by name.
func (s *Store) ListWebhooks(ctx context.Context) ([]Webhook, error) {
	rows, err := s.q.ListWebhooks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	out := make([]Webhook, len(rows))
	for i, r := range rows {
		out[i] = webhookFromRow(r)
	}
	return out, nil
}

// GetWebhook returns the webhook name, or an error wrapping
// job.ErrNotFound.
func (s *Store) GetWebhook(ctx context.Context, name string) (Webhook, error) {
	r, err := s.q.GetWebhook(ctx, name)
	if IsNoRows(err) {
		return Webhook{}, fmt.Errorf("webhook %s: %w", name, job.ErrNotFound)
	}
	if err != nil {
		return Webhook{}, fmt.Errorf("get webhook %s: %w", name, err)
	}
	return webhookFromRow(r), nil
}

func webhookFromRow(r db.Webhook) Webhook {
	w := Webhook{ID: r.ID, Name: r.Name, URL: r.Url, Types: r.Types, Secret: r.Secret, MaxAttempts: int(r.MaxAttempts), CreatedAt: r.CreatedAt}
	_ = json.Unmarshal(r.Labels, &w.Labels)
	return w
}

// DeleteWebhook removes a webhook with its subscriber's cursor and dead
// letters and publishes WebhookDeleted; an unknown name is an error
// wrapping job.ErrNotFound.
func (s *Store) DeleteWebhook(ctx context.Context, name string) error {
	return s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		if _, err := q.DeleteWebhook(ctx, name); IsNoRows(err) {
			return fmt.Errorf("webhook %s: %w", name, job.ErrNotFound)
		} else if err != nil {
			return fmt.Errorf("delete webhook %s: %w", name, err)
		}
		if err := q.DeleteSubscriberState(ctx, WebhookSubscriber(name)); err != nil {
			return fmt.Errorf("delete webhook %s: %w", name, err)
		}
		if _, err := eventbus.Publish(ctx, tx, eventbus.New("webhook", name, &hodeiv1.WebhookDeleted{Name: name})); err != nil {
			return fmt.Errorf("delete webhook %s: %w", name, err)
		}
		return nil
	})
}

// DeleteOrphanWebhookState deletes the cursors and dead letters of
// webhook subscribers whose webhook is gone (written by a subscriber that
// was still stopping when its webhook was removed). It returns the rows
// deleted.
func (s *Store) DeleteOrphanWebhookState(ctx context.Context) (int64, error) {
	n, err := s.q.DeleteOrphanWebhookState(ctx)
	if err != nil {
		return 0, fmt.Errorf("delete orphan webhook state: %w", err)
	}
	return n, nil
}

// JobHasLabels reports whether the job exists and its spec has every one
// of labels. A job's labels never change, so the answer holds for all of
// its events.
func (s *Store) JobHasLabels(ctx context.Context, jobID string, labels map[string]string) (bool, error) {
	id, err := uuid.Parse(jobID)
	if err != nil {
		return false, nil // not a job id: no such job
	}
	l, _ := json.Marshal(nonNil(labels))
	ok, err := s.q.JobHasLabels(ctx, db.JobHasLabelsParams{ID: id, Labels: l})
	if err != nil {
		return false, fmt.Errorf("labels of job %s: %w", jobID, err)
	}
	return ok, nil
}

// PendingDeadLetter names a dead letter not replayed yet.
type PendingDeadLetter struct{ ID, EventID int64 }

// PendingDeadLetters lists the dead letters of a subscriber that were not
// replayed, oldest first.
func (s *Store) PendingDeadLetters(ctx context.Context, subscriber string) ([]PendingDeadLetter, error) {
	rows, err := s.q.PendingDeadLetters(ctx, subscriber)
	if err != nil {
		return nil, fmt.Errorf("dead letters of %s: %w", subscriber, err)
	}
	out := make([]PendingDeadLetter, len(rows))
	for i, r := range rows {
		out[i] = PendingDeadLetter{ID: r.ID, EventID: r.EventID}
	}
	return out, nil
}
