package webhook_test

import (
	"bytes"
	"errors"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/db"
	"github.com/hodei-dev/hodei/internal/webhook"
)

// TestFailedDeliveryAndReplay: an event the endpoint keeps refusing is
// tried max_attempts times, then becomes a failed delivery and the webhook
// goes on; a replay stops at the first that fails again, and once the
// endpoint is back, sends every failed delivery, from the replica that
// runs the webhook or from any other.
func TestFailedDeliveryAndReplay(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	poison := p.newJob(t, nil)
	var down atomic.Bool
	down.Store(true)
	ep := newEndpoint(t, func(_ *http.Request, got received) int {
		if down.Load() && bytes.Contains(got.body, []byte(poison)) {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	w := p.addWebhook(t, store.Webhook{Name: "ci", URL: ep.URL + "/hooks/secret-token", Types: []string{"JobCompleted"}, MaxAttempts: 3})
	stop := p.runManager(t, p.config(t))
	ok := p.newJob(t, nil)

	bad1, good, bad2 := p.completed(t, poison), p.completed(t, ok), p.completed(t, poison)
	last := p.completed(t, ok)
	ep.waitDelivered(t, good, last)
	tries := 0
	for _, r := range ep.requests() {
		if r.delivery() == bad1 || r.delivery() == bad2 {
			tries++
		}
	}
	if tries != 6 {
		t.Errorf("the refused events were sent %d times, want 3 each", tries)
	}
	ctx := t.Context()
	failed, err := webhook.Failures(ctx, p.bus, w, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 2 || failed[0].Event.ID != bad1 || failed[1].Event.ID != bad2 || failed[0].Attempts != 3 ||
		failed[0].LastError != "answered 503 Service Unavailable" {
		t.Fatalf("failed deliveries %+v, want events %d and %d after 3 attempts, answered 503", failed, bad1, bad2)
	}
	if n, _ := p.metric(t, "hodei_events_dead_lettered_total", map[string]string{"subscriber": "webhook:ci"}); n != 2 {
		t.Errorf("dead lettered = %v, want 2", n)
	}

	// Replayed through the replica that runs the webhook (this one) while
	// the endpoint still refuses: one attempt, and the rest is not tried.
	other := webhook.NewSender(p.st, webhook.SenderConfig{})
	res, err := other.Replay(ctx, p.bus, w, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.FailedEventID != bad1 || res.Err != "answered 503 Service Unavailable" || !slices.Equal(res.NotTried, []int64{bad2}) || len(res.Delivered) != 0 {
		t.Errorf("replay while down: %+v, want %d failed again and %d not tried", res, bad1, bad2)
	}
	if failed, err := webhook.Failures(ctx, p.bus, w, 0); err != nil || len(failed) != 2 || failed[0].Attempts != 4 {
		t.Errorf("failed deliveries after the failed replay: %+v, %v; want two, the first after 4 attempts", failed, err)
	}

	// Events that are not failed deliveries of this webhook: nothing sent.
	sent := len(ep.requests())
	if _, err := other.Replay(ctx, p.bus, w, []int64{bad1, good}, false); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("replay of a delivered event: %v, want not found", err)
	}
	var fe *job.FieldError
	if _, err := other.Replay(ctx, p.bus, w, nil, false); !errors.As(err, &fe) || fe.Field != "event_ids" {
		t.Errorf("replay of nothing: %v, want an event_ids error", err)
	}
	if n := len(ep.requests()); n != sent {
		t.Errorf("%d requests sent by refused replays", n-sent)
	}

	// Back, and replayed by a replica that does not run the webhook.
	down.Store(false)
	stop()
	res, err = other.Replay(ctx, p.bus, w, []int64{bad2, bad1}, false)
	if err != nil || !slices.Equal(res.Delivered, []int64{bad1, bad2}) || res.FailedEventID != 0 {
		t.Fatalf("replay: %+v, %v; want %d and %d delivered in that order", res, err, bad1, bad2)
	}
	ep.waitDelivered(t, bad1, bad2)
	if failed, err := webhook.Failures(ctx, p.bus, w, 0); err != nil || len(failed) != 0 {
		t.Errorf("failed deliveries after the replay: %+v, %v", failed, err)
	}
}

// TestRemovalStopsDelivery: once a webhook is removed its subscriber stops
// (with its metric series), its cursor and failed deliveries are gone, and
// the next events go to the other webhooks only.
func TestRemovalStopsDelivery(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	gone, kept := newEndpoint(t, nil), newEndpoint(t, nil)
	p.addWebhook(t, store.Webhook{Name: "gone", URL: gone.URL, Types: []string{"JobCompleted"}})
	p.addWebhook(t, store.Webhook{Name: "kept", URL: kept.URL, Types: []string{"JobCompleted"}})
	p.runManager(t, p.config(t))
	jobID := p.newJob(t, nil)
	first := p.completed(t, jobID)
	gone.waitDelivered(t, first)
	kept.waitDelivered(t, first)
	ctx := t.Context()
	if err := db.New(p.st.SQLForTests()).ParkDeadLetter(ctx, db.ParkDeadLetterParams{Subscriber: "webhook:gone", EventID: first, Attempts: 1, LastError: "x", Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	series := func() int {
		_, bus := p.metric(t, "hodei_events_delivered_total", map[string]string{"subscriber": "webhook:gone"})
		_, own := p.metric(t, "hodei_webhook_deliveries_total", map[string]string{"webhook": "gone"})
		return bus + own
	}
	if series() == 0 {
		t.Fatal("no metric series of the webhook to be removed")
	}

	if err := p.st.DeleteWebhook(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "the removed webhook's series gone", func() bool { return series() == 0 })
	next := p.completed(t, jobID)
	kept.waitDelivered(t, next)
	if got := gone.delivered(); !slices.Equal(got, []int64{first}) {
		t.Errorf("the removed webhook was sent %v, want only %d", got, first)
	}
	var rows int
	if err := p.st.SQLForTests().QueryRow(ctx, `SELECT (SELECT count(*) FROM event_cursors WHERE subscriber = 'webhook:gone')
		+ (SELECT count(*) FROM event_dead_letters WHERE subscriber = 'webhook:gone')`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("%d rows of the removed webhook's subscriber remain (%v)", rows, err)
	}
}

// TestRestartResumesFromTheCursor: a manager stopped with a delivery in
// flight, and started again after more events, sends every event; only
// those after the cursor stored at the stop are sent twice.
func TestRestartResumesFromTheCursor(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	hold := p.newJob(t, nil)
	var holding atomic.Bool
	holding.Store(true)
	held := make(chan struct{}, 1)
	ep := newEndpoint(t, func(r *http.Request, got received) int {
		if bytes.Contains(got.body, []byte(hold)) && holding.Load() {
			held <- struct{}{}
			<-r.Context().Done()
		}
		return http.StatusNoContent
	})
	w := p.addWebhook(t, store.Webhook{Name: "r", URL: ep.URL, Types: []string{"JobCompleted"}})
	cfg := p.config(t)
	cfg.Timeout = time.Minute
	stop := p.runManager(t, cfg)

	jobID := p.newJob(t, nil)
	events := []int64{p.completed(t, jobID), p.completed(t, jobID)}
	ep.waitDelivered(t, events...)
	events = append(events, p.completed(t, hold))
	select {
	case <-held:
	case <-time.After(15 * time.Second):
		t.Fatal("the held event was not sent")
	}
	stop()
	holding.Store(false)
	c, err := db.New(p.st.SQLForTests()).GetCursor(t.Context(), store.WebhookSubscriber(w.Name))
	if err != nil {
		t.Fatal(err)
	}
	events = append(events, p.completed(t, jobID), p.completed(t, jobID))

	p.runManager(t, cfg)
	ep.waitDelivered(t, events...)
	sent := map[int64]int{}
	for _, r := range ep.requests() {
		sent[r.delivery()]++
	}
	for _, id := range events {
		if sent[id] > 1 && id <= c.EventID {
			t.Errorf("event %d, before the cursor stored at the stop (%d), was sent %d times", id, c.EventID, sent[id])
		}
	}
	if sent[events[2]] != 2 {
		t.Errorf("the event in flight at the stop was sent %d times, want 2", sent[events[2]])
	}
}
