package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store"
)

// DefaultTimeout bounds one POST, from dialing to the end of the answer.
const DefaultTimeout = 10 * time.Second

// The headers of a delivery.
const (
	HeaderEvent     = "X-Hodei-Event"     // the event type
	HeaderDelivery  = "X-Hodei-Delivery"  // the event id: the same on every attempt
	HeaderTimestamp = "X-Hodei-Timestamp" // Unix seconds when the attempt was signed
	HeaderSignature = "X-Hodei-Signature" // sha256=hex(HMAC-SHA256(secret, timestamp + "." + body))
)

// SenderConfig configures a Sender. Zero values take the defaults.
type SenderConfig struct {
	Timeout time.Duration    // one POST; default DefaultTimeout
	Metrics *Metrics         // nil: none
	Now     func() time.Time // the signature's timestamp; default time.Now
}

// Sender POSTs events to webhooks.
type Sender struct {
	st      *store.Store
	client  *http.Client
	timeout time.Duration
	metrics *Metrics
	now     func() time.Time
}

// NewSender returns a sender; st answers the label filter's lookups.
func NewSender(st *store.Store, cfg SenderConfig) *Sender {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: min(cfg.Timeout, 5*time.Second), KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = min(cfg.Timeout, 5*time.Second)
	tr.ResponseHeaderTimeout = cfg.Timeout
	client := &http.Client{Transport: tr, Timeout: cfg.Timeout,
		// A redirect is an answer that is not 2xx: a failed attempt.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &Sender{st: st, client: client, timeout: cfg.Timeout, metrics: cfg.Metrics, now: cfg.Now}
}

// Handler returns the bus handler that sends w the events that pass its
// label filter (the subscriber filters the types).
func (s *Sender) Handler(w store.Webhook) eventbus.Handler {
	return func(ctx context.Context, e eventbus.Event) error {
		if len(w.Labels) > 0 {
			ok, err := s.hasLabels(ctx, w, e)
			if err != nil || !ok {
				return err
			}
		}
		return s.post(ctx, w, e)
	}
}

// hasLabels reports whether e is an event of a job whose spec has every
// label of w.
func (s *Sender) hasLabels(ctx context.Context, w store.Webhook, e eventbus.Event) (bool, error) {
	if e.AggregateKind != "job" {
		return false, nil
	}
	if c := e.Payload.GetJobCreated(); c != nil {
		for k, v := range w.Labels {
			if have, ok := c.GetLabels()[k]; !ok || have != v {
				return false, nil
			}
		}
		return true, nil
	}
	return s.st.JobHasLabels(ctx, e.AggregateID, w.Labels)
}

// Delivery outcomes of hodei_webhook_deliveries_total.
const (
	outcomeDelivered = "delivered" // a 2xx answer
	outcomeRejected  = "rejected"  // any other answer
	outcomeTimeout   = "timeout"   // no answer within the timeout
	outcomeError     = "error"     // no connection, or it broke
)

// post sends one attempt. Its error never names the URL, which may hold a
// token: it goes to logs and to the list of failed deliveries.
func (s *Sender) post(ctx context.Context, w store.Webhook, e eventbus.Event) error {
	body, err := protojson.Marshal(e.Proto())
	if err != nil {
		return fmt.Errorf("encode event %d: %w", e.ID, err)
	}
	ts := strconv.FormatInt(s.now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", unwrapURL(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "hodei-webhook")
	req.Header.Set(HeaderEvent, e.Type)
	req.Header.Set(HeaderDelivery, strconv.FormatInt(e.ID, 10))
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, "sha256="+sign(w.Secret, ts, body))
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // stopping: not an attempt
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			s.metrics.delivery(w.Name, outcomeTimeout)
			return fmt.Errorf("no answer within %s", s.timeout)
		}
		s.metrics.delivery(w.Name, outcomeError)
		return fmt.Errorf("post: %w", unwrapURL(err))
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // lets the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		s.metrics.delivery(w.Name, outcomeDelivered)
		return nil
	}
	s.metrics.delivery(w.Name, outcomeRejected)
	if text := strings.Join(strings.Fields(string(head)), " "); text != "" {
		return fmt.Errorf("answered %s: %s", resp.Status, text)
	}
	return fmt.Errorf("answered %s", resp.Status)
}

// sign is the hex HMAC-SHA256 of timestamp, ".", body with secret.
func sign(secret, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// unwrapURL drops the method and URL that net/http puts in its errors.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
