package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store"
)

// signed checks a delivery's signature as a receiver would: the
// HMAC-SHA256 of the timestamp header, ".", and the raw body, with the
// shared secret, compared in constant time.
func signed(r received, secret string) bool {
	ts := r.header.Get("X-Hodei-Timestamp")
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(r.body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(r.header.Get("X-Hodei-Signature")), []byte(want))
}

// verify checks the signature of a delivery and that its timestamp is
// close to now (a receiver refuses old ones: replays of a captured
// request).
func verify(t *testing.T, r received, secret string) {
	t.Helper()
	ts := r.header.Get("X-Hodei-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		t.Fatalf("X-Hodei-Timestamp %q: %v", ts, err)
	}
	if age := time.Since(time.Unix(sec, 0)); age < -5*time.Second || age > time.Minute {
		t.Errorf("X-Hodei-Timestamp is %v old", age)
	}
	if !signed(r, secret) {
		t.Errorf("X-Hodei-Signature %q does not sign the timestamp and body with the secret", r.header.Get("X-Hodei-Signature"))
	}
}

// TestDeliveryIsSigned: a webhook is sent the events of its type published
// after its creation, as proto JSON with a signature its receiver can
// check; an event published before it existed is not sent.
func TestDeliveryIsSigned(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ep := newEndpoint(t, nil)
	jobID := p.newJob(t, nil)
	before := p.completed(t, jobID)
	const secret = "correct horse battery staple"
	p.addWebhook(t, store.Webhook{Name: "ci", URL: ep.URL + "/hook?token=x", Types: []string{"JobCompleted"}, Secret: secret})
	p.runManager(t, p.config(t))

	ev := p.completed(t, jobID)
	ep.waitDelivered(t, ev)
	got := ep.requests()
	if len(got) != 1 {
		t.Fatalf("endpoint got %d requests, want 1 (event %d only, not %d from before the webhook)", len(got), ev, before)
	}
	r := got[0]
	verify(t, r, secret)
	for h, want := range map[string]string{"Content-Type": "application/json", "X-Hodei-Event": "JobCompleted", "X-Hodei-Delivery": strconv.FormatInt(ev, 10)} {
		if v := r.header.Get(h); v != want {
			t.Errorf("%s: %q, want %q", h, v, want)
		}
	}
	var e hodeiv1.Event
	if err := protojson.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if e.GetId() != ev || e.GetType() != "JobCompleted" || e.GetAggregateKind() != "job" || e.GetAggregateId() != jobID ||
		e.GetPayload().GetJobCompleted().GetJobId() != jobID || e.GetTime() == nil {
		t.Errorf("body %s does not describe event %d", r.body, ev)
	}

	// A receiver that checks signatures rejects a tampered body or secret.
	tampered := r
	tampered.body = []byte(strings.Replace(string(r.body), jobID, "0190a4b2-0000-7000-8000-000000000000", 1))
	if signed(tampered, secret) || signed(r, secret+"x") {
		t.Errorf("a tampered body or another secret passed the signature check")
	}
}

// TestTypeAndLabelFilter: a webhook with labels is sent only the events of
// its types of the jobs with those labels: JobCreated by its payload, the
// other job events by the job's stored labels; events that are not about
// jobs never.
func TestTypeAndLabelFilter(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	teamA, all := newEndpoint(t, nil), newEndpoint(t, nil)
	p.addWebhook(t, store.Webhook{Name: "team-a", URL: teamA.URL, Types: []string{"JobCreated", "JobFailed", "JobCompleted", "WorkerRegistered"},
		Labels: map[string]string{"team": "a"}})
	p.addWebhook(t, store.Webhook{Name: "all", URL: all.URL, Types: []string{"JobCreated", "JobFailed", "JobCompleted"}})
	p.runManager(t, p.config(t))

	a := p.newJob(t, map[string]string{"team": "a", "env": "prod"})
	aEvents := []int64{p.lastEventID(t)} // a's JobCreated
	b := p.newJob(t, map[string]string{"team": "b"})
	none := p.newJob(t, nil)
	p.publish(t, a, &hodeiv1.JobStarted{JobId: a, Attempt: 1})
	aEvents = append(aEvents, p.completed(t, a))
	p.completed(t, b)
	p.completed(t, none)
	aEvents = append(aEvents, p.publish(t, a, &hodeiv1.JobFailed{JobId: a, Attempt: 2}))
	p.publish(t, b, &hodeiv1.JobFailed{JobId: b, Attempt: 2})
	w1 := eventbus.New("worker", "w1", &hodeiv1.WorkerRegistered{WorkerId: "w1", Labels: map[string]string{"team": "a"}})
	if err := p.st.PublishEvents(t.Context(), w1); err != nil {
		t.Fatal(err)
	}
	last := p.completed(t, a) // sent to both; everything before it was handled first
	aEvents = append(aEvents, last)

	all.waitDelivered(t, last)
	teamA.waitDelivered(t, last)
	if got := teamA.delivered(); !slices.Equal(got, aEvents) {
		t.Errorf("team-a was sent %v, want %v", got, aEvents)
	}
	var types []string
	for _, r := range teamA.requests() {
		types = append(types, r.header.Get("X-Hodei-Event"))
	}
	if want := []string{"JobCreated", "JobCompleted", "JobFailed", "JobCompleted"}; !slices.Equal(types, want) {
		t.Errorf("team-a was sent %v, want %v", types, want)
	}
	if got := len(all.delivered()); got != 9 {
		t.Errorf("all was sent %d events, want 9 (3 created, 4 completed, 2 failed)", got)
	}
}

// TestRetryAfterFailure: an endpoint that fails once is sent the event
// again, with the same delivery id, and nothing is left failed.
func TestRetryAfterFailure(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	calls := 0
	ep := newEndpoint(t, func(*http.Request, received) int {
		calls++ // requests of one webhook come one at a time
		if calls == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	w := p.addWebhook(t, store.Webhook{Name: "flaky", URL: ep.URL, Types: []string{"JobCompleted"}})
	p.runManager(t, p.config(t))

	ev := p.completed(t, p.newJob(t, nil))
	ep.waitDelivered(t, ev)
	got := ep.requests()
	if len(got) != 2 || got[0].status != 500 || got[0].delivery() != ev || got[1].delivery() != ev {
		t.Fatalf("requests %+v, want a 500 then a 200 for delivery %d", got, ev)
	}
	// The endpoint records a request as it answers: the sender counts it
	// a moment later.
	waitUntil(t, 10*time.Second, "a delivery counted", func() bool {
		n, _ := p.metric(t, "hodei_webhook_deliveries_total", map[string]string{"webhook": "flaky", "outcome": "delivered"})
		return n == 1
	})
	if n, _ := p.metric(t, "hodei_webhook_deliveries_total", map[string]string{"webhook": "flaky", "outcome": "rejected"}); n != 1 {
		t.Errorf("rejected deliveries = %v, want 1", n)
	}
	if n, _ := p.metric(t, "hodei_event_handler_failures_total", map[string]string{"subscriber": "webhook:flaky"}); n != 1 {
		t.Errorf("handler failures of webhook:flaky = %v, want 1", n)
	}
	if f, err := p.st.PendingDeadLetters(t.Context(), store.WebhookSubscriber(w.Name)); err != nil || len(f) != 0 {
		t.Errorf("failed deliveries %v, %v; want none", f, err)
	}
}

// TestSlowEndpointDelaysNoOther: while one webhook's endpoint holds a
// request, another webhook is sent the same event.
func TestSlowEndpointDelaysNoOther(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	held, release := make(chan struct{}, 1), make(chan struct{})
	slow := newEndpoint(t, func(r *http.Request, _ received) int {
		select {
		case held <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	fast := newEndpoint(t, nil)
	p.addWebhook(t, store.Webhook{Name: "slow", URL: slow.URL, Types: []string{"JobCompleted"}})
	p.addWebhook(t, store.Webhook{Name: "fast", URL: fast.URL, Types: []string{"JobCompleted"}})
	cfg := p.config(t)
	cfg.Timeout = time.Minute
	p.runManager(t, cfg)

	jobID := p.newJob(t, nil)
	first := p.completed(t, jobID)
	select {
	case <-held:
	case <-time.After(15 * time.Second):
		t.Fatal("the slow endpoint was not sent the first event")
	}
	second := p.completed(t, jobID)
	fast.waitDelivered(t, first, second)
	if got := slow.requests(); len(got) != 0 {
		t.Fatalf("the slow endpoint answered %d requests while it was held", len(got))
	}
	close(release)
	slow.waitDelivered(t, first, second)
}

// TestTimeoutIsAFailedAttempt: an endpoint that does not answer within the
// timeout fails the attempt.
func TestTimeoutIsAFailedAttempt(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ep := newEndpoint(t, func(r *http.Request, _ received) int {
		<-r.Context().Done()
		return http.StatusOK
	})
	w := p.addWebhook(t, store.Webhook{Name: "mute", URL: ep.URL, Types: []string{"JobCompleted"}, MaxAttempts: 1})
	cfg := p.config(t)
	cfg.Timeout = 200 * time.Millisecond
	p.runManager(t, cfg)

	ev := p.completed(t, p.newJob(t, nil))
	waitUntil(t, 15*time.Second, "a failed delivery", func() bool {
		f, err := p.st.PendingDeadLetters(t.Context(), store.WebhookSubscriber(w.Name))
		return err == nil && len(f) == 1 && f[0].EventID == ev
	})
	dls, err := p.bus.ListDeadLetters(t.Context(), store.WebhookSubscriber(w.Name), 0)
	if err != nil || len(dls) != 1 || dls[0].LastError != "no answer within 200ms" {
		t.Errorf("failed deliveries %+v, %v; want one with %q", dls, err, "no answer within 200ms")
	}
	if n, _ := p.metric(t, "hodei_webhook_deliveries_total", map[string]string{"webhook": "mute", "outcome": "timeout"}); n != 1 {
		t.Errorf("timeouts = %v, want 1", n)
	}
}
