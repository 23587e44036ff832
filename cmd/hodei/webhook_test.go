package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// hook is an endpoint in the test process that records what it is sent.
type hook struct {
	*httptest.Server
	failing atomic.Bool // answer 503 to JobFailed

	mu  sync.Mutex
	got []hookRequest
}

type hookRequest struct {
	event, delivery, timestamp, signature string
	body                                  []byte
	status                                int
}

// job is the job id in the request's body.
func (r hookRequest) job(t *testing.T) string {
	var e struct {
		AggregateID string `json:"aggregateId"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return e.AggregateID
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := hookRequest{event: r.Header.Get("X-Hodei-Event"), delivery: r.Header.Get("X-Hodei-Delivery"),
			timestamp: r.Header.Get("X-Hodei-Timestamp"), signature: r.Header.Get("X-Hodei-Signature"), body: body, status: http.StatusOK}
		if req.event == "JobFailed" && h.failing.Load() {
			req.status = http.StatusServiceUnavailable
		}
		h.mu.Lock()
		h.got = append(h.got, req)
		h.mu.Unlock()
		w.WriteHeader(req.status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) requests() []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookRequest(nil), h.got...)
}

// rows counts the webhooks and the events about webhooks in the database.
func rows(t *testing.T, dbURL string) (webhooks, events int) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM webhooks), (SELECT count(*) FROM events WHERE aggregate_kind = 'webhook')").Scan(&webhooks, &events); err != nil {
		t.Fatal(err)
	}
	return webhooks, events
}

// refusesBadWebhooks: webhook add refuses each bad field, naming it, and
// stores nothing.
func refusesBadWebhooks(t *testing.T, p serverProc, url string) {
	t.Helper()
	for _, c := range []struct {
		args  []string
		field string
	}{
		{[]string{"CI", url, "--type", "JobFailed"}, "name"},
		{[]string{"ci", "ftp://ci.example/", "--type", "JobFailed"}, "url"},
		{[]string{"ci", url, "--type", "JobExploded"}, "types"},
		{[]string{"ci", url, "--type", "JobFailed", "--label", "-x=1"}, "labels"},
		{[]string{"ci", url, "--type", "JobFailed", "--max-attempts", "1000"}, "max_attempts"},
	} {
		r := p.hodei(t, append([]string{"webhook", "add"}, c.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "invalid_argument: "+c.field+":") {
			t.Errorf("webhook add %v: exit %d, stderr %q; want 1 and an invalid %s", c.args, r.code, r.stderr, c.field)
		}
	}
	if webhooks, events := rows(t, p.dbURL); webhooks != 0 || events != 0 {
		t.Fatalf("after refused webhooks: %d webhooks and %d events about webhooks, want none", webhooks, events)
	}
}

// TestWebhookThroughTheCLI: bad webhooks are refused with the field named
// and nothing stored; a webhook with a type and label filter is sent the
// outcomes of its jobs, signed with the secret from its file; a failed
// delivery is listed and replayed; a removed webhook is gone.
func TestWebhookThroughTheCLI(t *testing.T) {
	t.Parallel()
	p := startServerOn(t, storetest.URL(t), freeAddr(t), "--worker-label", "team=a")
	h := newHook(t)
	h.failing.Store(true)

	refusesBadWebhooks(t, p, h.URL)

	const secret = "s3cret-s3cret-s3cret"
	r := p.hodei(t, "webhook", "add", "ci", h.URL, "--type", "JobFailed", "--type", "JobCompleted", "--label", "team=a",
		"--secret-file", writeFile(t, secret+"\n"), "--max-attempts", "1")
	if r.code != 0 || !strings.Contains(r.stdout, "webhook ci added") || strings.Contains(r.stdout, "secret") {
		t.Fatalf("webhook add: %+v", r)
	}
	r = p.hodei(t, "webhook", "add", "gen", h.URL, "--type", "WorkerTerminated")
	if r.code != 0 || !regexp.MustCompile(`signing secret \(shown only now\): [0-9a-f]{64}\n`).MatchString(r.stdout) {
		t.Fatalf("webhook add with a generated secret: %+v", r)
	}
	if r := p.hodei(t, "webhook", "add", "ci", h.URL, "--type", "JobFailed"); r.code != 1 || !strings.Contains(r.stderr, "already_exists") {
		t.Errorf("second webhook named ci: %+v", r)
	}
	r = p.hodei(t, "webhook", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "ci ") || !strings.Contains(r.stdout, "gen ") || !strings.Contains(r.stdout, "team=a") {
		t.Errorf("webhook list: %+v", r)
	}
	r = p.hodei(t, "webhook", "list", "-o", "json")
	if r.code != 0 || strings.Count(r.stdout, `"name": `) != 2 || strings.Contains(r.stdout, secret) {
		t.Errorf("webhook list -o json: %+v, want the two webhooks without their secrets", r)
	}

	// Run one after the other: when the last one's event arrives, the
	// others' have been handled.
	runJob := func(args ...string) string {
		t.Helper()
		r := p.hodei(t, append([]string{"job", "submit"}, args...)...)
		id := strings.TrimSpace(r.stdout)
		if r.code != 0 || id == "" {
			t.Fatalf("job submit %v: %+v", args, r)
		}
		if r := p.hodei(t, "job", "watch", id); r.code != 0 {
			t.Fatalf("job watch %s: %+v", id, r)
		}
		return id
	}
	succeeded := runJob("--label", "team=a", "--", "true")
	runJob("--", "true") // no label: not sent
	failed := runJob("--label", "team=a", "--", "sh", "-c", "exit 3")
	eventually(t, 30*time.Second, "the failed job's event sent", func() bool {
		got := h.requests()
		return len(got) > 0 && got[len(got)-1].event == "JobFailed"
	})
	got := h.requests()
	if len(got) != 2 || got[0].event != "JobCompleted" || got[0].job(t) != succeeded || got[1].job(t) != failed {
		t.Fatalf("the webhook was sent %d requests, want the JobCompleted of %s and the JobFailed of %s", len(got), succeeded, failed)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(got[0].timestamp + "." + string(got[0].body)))
	if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); !hmac.Equal([]byte(got[0].signature), []byte(want)) {
		t.Errorf("signature %q, want %q (the secret file without its newline)", got[0].signature, want)
	}

	r = p.hodei(t, "webhook", "deliveries", "ci")
	if r.code != 0 || !strings.Contains(r.stdout, got[1].delivery+"  JobFailed  1") || !strings.Contains(r.stdout, "answered 503 Service Unavailable") {
		t.Fatalf("webhook deliveries: %+v", r)
	}
	r = p.hodei(t, "webhook", "deliveries", "ci", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"type": "JobFailed"`) || !strings.Contains(r.stdout, `"attempts": 1`) {
		t.Errorf("webhook deliveries -o json: %+v", r)
	}
	// Replayed while the endpoint still fails: exit 1, naming the event.
	r = p.hodei(t, "webhook", "replay", "ci", "--id", got[1].delivery, "-o", "json")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "hodei: event "+got[1].delivery+" failed again: ") || !strings.Contains(r.stdout, `"failedEventId": "`+got[1].delivery+`"`) {
		t.Errorf("webhook replay --id of a delivery that fails again: %+v", r)
	}
	h.failing.Store(false)
	if r := p.hodei(t, "webhook", "replay", "ci", "--all"); r.code != 0 || r.stdout != "delivered 1\n" {
		t.Fatalf("webhook replay: %+v", r)
	}
	if got := h.requests(); len(got) != 4 || got[3].delivery != got[1].delivery || got[3].status != http.StatusOK {
		t.Errorf("after the replays the webhook was sent %d requests, want the failed one twice again", len(got))
	}
	if r := p.hodei(t, "webhook", "deliveries", "ci"); r.code != 0 || strings.Contains(r.stdout, "JobFailed") {
		t.Errorf("webhook deliveries after the replay: %+v", r)
	}

	for _, name := range []string{"ci", "gen"} {
		if r := p.hodei(t, "webhook", "remove", name); r.code != 0 {
			t.Errorf("webhook remove %s: %+v", name, r)
		}
	}
	if r := p.hodei(t, "webhook", "remove", "ci"); r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Errorf("second remove: %+v", r)
	}
	if webhooks, _ := rows(t, p.dbURL); webhooks != 0 {
		t.Errorf("%d webhooks after removing both", webhooks)
	}
}
