package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/db"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// lastEvent returns the id and type of the newest event.
func lastEvent(t *testing.T, s *store.Store) (int64, string) {
	t.Helper()
	var id int64
	var typ string
	if err := s.SQLForTests().QueryRow(context.Background(), "SELECT id, type FROM events ORDER BY id DESC LIMIT 1").Scan(&id, &typ); err != nil {
		t.Fatal(err)
	}
	return id, typ
}

// TestWebhookLifecycle: a webhook is stored with its subscriber's cursor at
// its WebhookCreated event; a second one of the name changes nothing;
// removing it removes its cursor and dead letters; a new webhook of the
// same name starts at its own creation.
func TestWebhookLifecycle(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	in := store.Webhook{Name: "ci", URL: "https://ci.example/hook", Types: []string{"JobFailed"}, Labels: map[string]string{"team": "a"},
		Secret: "0123456789abcdef", MaxAttempts: 8}
	w, err := s.CreateWebhook(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	created, typ := lastEvent(t, s)
	if typ != "WebhookCreated" {
		t.Fatalf("last event %s, want WebhookCreated", typ)
	}
	sub := store.WebhookSubscriber("ci")
	c, err := db.New(s.SQLForTests()).GetCursor(ctx, sub)
	if err != nil || c.EventID != created {
		t.Fatalf("cursor %+v, %v; want at event %d", c, err, created)
	}
	got, err := s.GetWebhook(ctx, "ci")
	if err != nil {
		t.Fatal(err)
	}
	in.ID, in.CreatedAt = w.ID, w.CreatedAt
	if diff := cmp.Diff(in, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("stored webhook (-want +got):\n%s", diff)
	}

	_, _, before := counts(t, s)
	if _, err := s.CreateWebhook(ctx, store.Webhook{Name: "ci", URL: "http://other", Types: []string{"JobCompleted"}, Secret: "x", MaxAttempts: 1}); !errors.Is(err, store.ErrWebhookExists) {
		t.Errorf("second webhook of the name: %v, want ErrWebhookExists", err)
	}
	if _, _, after := counts(t, s); after != before {
		t.Errorf("events %d after a refused create, want %d", after, before)
	}
	if all, err := s.ListWebhooks(ctx); err != nil || len(all) != 1 || all[0].URL != in.URL {
		t.Errorf("webhooks after a refused create: %+v, %v", all, err)
	}

	if err := db.New(s.SQLForTests()).ParkDeadLetter(ctx, db.ParkDeadLetterParams{Subscriber: sub, EventID: created, Attempts: 8, LastError: "x", Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteWebhook(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if _, typ := lastEvent(t, s); typ != "WebhookDeleted" {
		t.Errorf("last event %s, want WebhookDeleted", typ)
	}
	if _, err := db.New(s.SQLForTests()).GetCursor(ctx, sub); !store.IsNoRows(err) {
		t.Errorf("cursor of the removed webhook: %v, want none", err)
	}
	if p, err := s.PendingDeadLetters(ctx, sub); err != nil || len(p) != 0 {
		t.Errorf("dead letters of the removed webhook: %v, %v", p, err)
	}
	if err := s.DeleteWebhook(ctx, "ci"); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("second delete: %v, want not found", err)
	}
	if _, err := s.GetWebhook(ctx, "ci"); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("get after delete: %v, want not found", err)
	}

	w2, err := s.CreateWebhook(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	recreated, _ := lastEvent(t, s)
	if c, err := db.New(s.SQLForTests()).GetCursor(ctx, sub); err != nil || c.EventID != recreated || w2.ID == w.ID {
		t.Errorf("re-created webhook: id %d (was %d), cursor %+v, %v; want a new id and the cursor at event %d", w2.ID, w.ID, c, err, recreated)
	}
}

// TestDeleteOrphanWebhookState deletes what subscribers of removed
// webhooks left, and nothing of live webhooks or other subscribers.
func TestDeleteOrphanWebhookState(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	if _, err := s.CreateWebhook(ctx, store.Webhook{Name: "live", URL: "http://x", Types: []string{"JobFailed"}, Secret: "s", MaxAttempts: 1}); err != nil {
		t.Fatal(err)
	}
	ev, _ := lastEvent(t, s)
	for _, sub := range []string{"webhook:gone", "webhook:live", "dispatcher"} {
		if err := db.New(s.SQLForTests()).EnsureCursor(ctx, db.EnsureCursorParams{Subscriber: sub, Xid: "0", EventID: 0}); err != nil {
			t.Fatal(err)
		}
		if err := db.New(s.SQLForTests()).ParkDeadLetter(ctx, db.ParkDeadLetterParams{Subscriber: sub, EventID: ev, Attempts: 1, LastError: "x", Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.DeleteOrphanWebhookState(ctx)
	if err != nil || n != 2 {
		t.Fatalf("deleted %d rows, %v; want the cursor and the dead letter of webhook:gone", n, err)
	}
	for _, sub := range []string{"webhook:live", "dispatcher"} {
		if _, err := db.New(s.SQLForTests()).GetCursor(ctx, sub); err != nil {
			t.Errorf("cursor of %s: %v", sub, err)
		}
		if p, err := s.PendingDeadLetters(ctx, sub); err != nil || len(p) != 1 || p[0].EventID != ev {
			t.Errorf("dead letters of %s: %v, %v", sub, p, err)
		}
	}
}

func TestJobHasLabels(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	j, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}, Labels: map[string]string{"team": "a", "env": "prod"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id     string
		labels map[string]string
		want   bool
	}{
		{j.ID, map[string]string{"team": "a"}, true},
		{j.ID, map[string]string{"team": "a", "env": "prod"}, true},
		{j.ID, nil, true},
		{j.ID, map[string]string{"team": "b"}, false},
		{j.ID, map[string]string{"team": "a", "zone": "x"}, false},
		{"0190a4b2-0000-7000-8000-000000000000", map[string]string{"team": "a"}, false},
		{"not-a-job", map[string]string{"team": "a"}, false},
	} {
		if got, err := s.JobHasLabels(ctx, c.id, c.labels); err != nil || got != c.want {
			t.Errorf("JobHasLabels(%s, %v) = %v, %v; want %v", c.id, c.labels, got, err, c.want)
		}
	}
}
