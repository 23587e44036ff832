package webhook_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/store"
)

// TestAnswersThatFailAnAttempt: a redirect is not followed and an error
// answer is recorded with the start of its body, as rejected; an
// endpoint that refuses the connection is an error. No failure names
// the URL, whose query may hold a token.
func TestAnswersThatFailAnAttempt(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	followed := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/elsewhere":
			followed <- struct{}{}
		default:
			http.Error(w, "disk\n   full", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	const token = "?token=s3cr3t"
	want := map[string]string{"moved": "answered 302 Found", "broken": "answered 500 Internal Server Error: disk full", "gone": "post: dial tcp"}
	for name, url := range map[string]string{"moved": srv.URL + "/moved", "broken": srv.URL + "/broken", "gone": closed} {
		p.addWebhook(t, store.Webhook{Name: name, URL: url + token, Types: []string{"JobCompleted"}, MaxAttempts: 1})
	}
	p.runManager(t, p.config(t))
	ev := p.completed(t, p.newJob(t, nil))
	for name, text := range want {
		sub := store.WebhookSubscriber(name)
		waitUntil(t, 15*time.Second, "a failed delivery to "+name, func() bool {
			f, err := p.st.PendingDeadLetters(t.Context(), sub)
			return err == nil && len(f) == 1 && f[0].EventID == ev
		})
		dls, err := p.bus.ListDeadLetters(t.Context(), sub, 0)
		if err != nil || len(dls) != 1 || !strings.HasPrefix(dls[0].LastError, text) || strings.Contains(dls[0].LastError, "s3cr3t") {
			t.Errorf("%s: failed deliveries %+v, %v; want one starting %q without the URL", name, dls, err, text)
		}
	}
	select {
	case <-followed:
		t.Error("the redirect was followed")
	default:
	}
	for outcome, n := range map[string]float64{"rejected": 2, "error": 1} {
		if got, _ := p.metric(t, "hodei_webhook_deliveries_total", map[string]string{"outcome": outcome}); got != n {
			t.Errorf("%s deliveries = %v, want %v", outcome, got, n)
		}
	}
}
