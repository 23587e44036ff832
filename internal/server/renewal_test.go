package server

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// renewals is a server with a CA whose worker streams are looked at by
// hand: what checkWorkerCert sends them at a given time.
type renewals struct {
	t  *testing.T
	s  *Server
	st *store.Store
}

func newRenewals(t *testing.T) renewals {
	t.Helper()
	st := storetest.Open(t)
	auth, err := pki.NewAuthority(pki.AuthorityConfig{CA: ephemeral(t), Hosts: []string{"127.0.0.1"}, CertTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{ReplicaID: "renewals", Registry: prometheus.NewRegistry(), Authority: auth, Logger: storetest.Logger(t),
		CertCheckInterval: time.Minute, RenewBefore: time.Hour}, st, st.NewBus(eventbus.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	return renewals{t, s, st}
}

// conn is the stream of a connected worker whose certificate, of the
// signing CA and the current bundle, ends at notAfter ("" serial: a
// plaintext stream).
func (r renewals) conn(serial string, notAfter time.Time) *workerConn {
	ca := r.s.cfg.Authority.CA().Cert
	return &workerConn{id: storetest.ConnectedWorker(r.t, r.st), out: make(chan *hodeiv1.ConnectResponse, 16), done: make(chan struct{}),
		running: map[int64]string{}, cert: certState{serial: serial, notAfter: notAfter, issuer: ca.SubjectKeyId, bundle: bundleID(r.s.cfg.Authority.Bundle())}}
}

// asked reports whether c was sent a RenewCertificate since last asked.
func (r renewals) asked(c *workerConn) bool {
	select {
	case m := <-c.out:
		if m.GetRenewCertificate() == nil {
			r.t.Fatalf("sent %v, want a renewal request", m)
		}
		return true
	default:
		return false
	}
}

// TestRenewalNotAnsweredIsRetriedAfterABackoff: a worker whose
// certificate expires within the renewal margin is asked once to renew,
// and the expiry is announced once; unanswered past the timeout, the
// renewal is recorded as failed and asked again only after a backoff.
// A plaintext stream and a certificate far from its end are left alone.
func TestRenewalNotAnsweredIsRetriedAfterABackoff(t *testing.T) {
	t.Parallel()
	r := newRenewals(t)
	ctx := context.Background()
	now := time.Now()
	c := r.conn("abc123", now.Add(30*time.Minute))
	fresh := r.conn("def456", now.Add(50*time.Hour))
	plain := r.conn("", time.Time{})
	steps := []struct {
		at   time.Duration
		want bool
	}{{0, true}, {time.Second, false}, {renewTimeout + time.Second, false}, {renewTimeout + 2*time.Second, false}, {renewTimeout + time.Second + time.Minute, true}}
	for _, step := range steps {
		r.s.checkWorkerCert(ctx, c, now.Add(step.at))
		if got := r.asked(c); got != step.want {
			t.Errorf("at +%v: asked %v, want %v", step.at, got, step.want)
		}
	}
	for _, other := range []*workerConn{fresh, plain} {
		r.s.checkWorkerCert(ctx, other, now)
		if r.asked(other) {
			t.Errorf("worker %s (serial %q) was asked to renew", other.id, other.cert.serial)
		}
	}
	if d := cmp.Diff([]string{"CertificateExpiring", "RotationFailed"}, workerCertEvents(t, r.st, c.id)); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	if n := testutil.ToFloat64(r.s.certMetrics.rotations.WithLabelValues("worker", "failure")); n != 1 {
		t.Errorf("failed worker rotations %v, want 1", n)
	}
}

// TestRenewalRefusedOrUnsignable: a renewal whose request cannot be
// signed, or whose certificate the worker refuses, is recorded as failed
// with why, and backs off.
func TestRenewalRefusedOrUnsignable(t *testing.T) {
	t.Parallel()
	r := newRenewals(t)
	ctx := context.Background()
	c := r.conn("abc123", time.Now().Add(30*time.Minute))
	r.s.certificateRequest(ctx, c, &hodeiv1.CertificateRequest{Csr: []byte("junk")})
	r.s.certificateResult(ctx, c, &hodeiv1.CertificateResult{Error: "certificate names another worker"})
	if r.asked(c) {
		t.Error("a renewal was sent for an unsignable request")
	}
	if c.cert.failures != 2 || !c.cert.nextTry.After(time.Now()) {
		t.Errorf("after two failures: %d failures, next try %v; want 2 and a backoff", c.cert.failures, c.cert.nextTry)
	}
	if d := cmp.Diff([]string{"RotationFailed", "RotationFailed"}, workerCertEvents(t, r.st, c.id)); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	// Without a CA (plaintext), a request is ignored.
	s, err := New(Config{ReplicaID: "plain", Registry: prometheus.NewRegistry()}, r.st, r.st.NewBus(eventbus.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	s.certificateRequest(ctx, c, &hodeiv1.CertificateRequest{Csr: []byte("junk")})
	if c.cert.failures != 2 || r.asked(c) {
		t.Errorf("a plaintext server acted on a certificate request: %d failures", c.cert.failures)
	}
}

// workerCertEvents lists a worker's certificate events.
func workerCertEvents(t *testing.T, st *store.Store, id string) []string {
	t.Helper()
	var types []string
	if err := st.SQLForTests().QueryRow(context.Background(), `SELECT coalesce(array_agg(type ORDER BY id), '{}') FROM events
		WHERE aggregate_kind = 'worker' AND aggregate_id = $1 AND type IN ('CertificateExpiring', 'RotationFailed', 'CertificateRotated')`, id).Scan(&types); err != nil {
		t.Fatal(err)
	}
	return types
}
