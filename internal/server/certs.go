package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/store"
)

// Certificate rotation. Each replica's certificate manager (Server.RunCerts)
// checks every CertCheckInterval the expiry of its own certificate and of
// the client certificates of the workers whose streams it holds. One with
// less than RenewBefore left is announced (CertificateExpiring) and
// renewed: the server's is reissued and served to new connections
// (GetCertificate); a worker is sent RenewCertificate over its stream,
// answers with a CertificateRequest for a new key, is sent the
// IssuedCertificate (recorded as its pending certificate), checks it and
// answers with a CertificateResult: CertificateRotated when it switched
// (the pending certificate becomes its own), RotationFailed when it did
// not, retried with backoff. Nothing reconnects: the agent presents its
// new certificate on its next connection.

// certState is a worker stream's client certificate and its renewal
// (workerConn.mu).
type certState struct {
	serial    string
	notAfter  time.Time
	issuer    []byte    // the signing CA's key id (AuthorityKeyId)
	bundle    string    // the trust bundle the agent has, as bundleID
	sent      string    // the bundle sent with the renewal under way
	announced string    // serial whose CertificateExpiring was published
	asked     time.Time // RenewCertificate sent, no result yet (zero: none)
	failures  int
	nextTry   time.Time
}

// renewTimeout is how long a worker has to answer a renewal before it
// counts as failed.
const renewTimeout = 30 * time.Second

type certMetrics struct {
	expiry    *prometheus.GaugeVec
	rotations *prometheus.CounterVec
}

func newCertMetrics(reg *prometheus.Registry) *certMetrics {
	m := &certMetrics{
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hodei_certificate_expiry_timestamp_seconds",
			Help: "When a certificate this replica serves or checks expires (Unix seconds): kind server, ca or worker."}, []string{"kind", "subject"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hodei_certificate_rotations_total",
			Help: "Certificate renewals by kind and result (success, failure)."}, []string{"kind", "result"}),
	}
	reg.MustRegister(m.expiry, m.rotations)
	return m
}

type peerKey struct{}

// withPeer keeps the TLS state of a request for the worker service.
func withPeer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			r = r.WithContext(context.WithValue(r.Context(), peerKey{}, r.TLS))
		}
		h.ServeHTTP(w, r)
	})
}

// peerWorker returns the worker id and serial of the client certificate
// of the stream (verified by the handshake against the trust bundle).
func peerWorker(ctx context.Context) (id, serial string, err error) {
	st, _ := ctx.Value(peerKey{}).(*tls.ConnectionState)
	if st == nil || len(st.PeerCertificates) == 0 {
		return "", "", connect.NewError(connect.CodeUnauthenticated, errors.New("a worker client certificate is required"))
	}
	leaf := st.PeerCertificates[0]
	id, ok := pki.WorkerID(leaf)
	if !ok {
		return "", "", connect.NewError(connect.CodeUnauthenticated, errors.New("the client certificate names no worker (no hodei://worker/ URI)"))
	}
	return id, pki.Serial(leaf), nil
}

// issue signs a worker's certificate request.
func (s *Server) issue(csr []byte, workerID string) (store.Cert, error) {
	c, err := s.cfg.Authority.SignWorker(csr, workerID)
	if err != nil {
		return store.Cert{}, err
	}
	return store.Cert{Serial: pki.Serial(c), NotAfter: c.NotAfter, PEM: pki.EncodeCert(c)}, nil
}

// RunCerts is the certificate manager of this replica; it returns when
// ctx ends. Without an authority (plaintext) it only waits.
func (s *Server) RunCerts(ctx context.Context) error {
	if s.cfg.Authority == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(s.cfg.CertCheckInterval)
	defer t.Stop()
	for {
		s.checkCerts(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// checkCerts refreshes the trust bundle from the database and renews what
// expires within RenewBefore.
func (s *Server) checkCerts(ctx context.Context) {
	a := s.cfg.Authority
	if b, err := s.store.TrustBundle(ctx); err != nil {
		s.log.Warn("read trust bundle", "err", err)
	} else if len(b) > 0 {
		if err := a.SetBundle(b); err != nil {
			s.log.Warn("trust bundle", "err", err)
		}
	}
	now := time.Now()
	s.certMetrics.expiry.WithLabelValues("ca", pki.Fingerprint(a.CA().Cert)[:16]).Set(float64(a.CA().Cert.NotAfter.Unix()))
	s.bundle.Store(bundleID(a.Bundle()))
	s.checkServerCert(ctx, now)
	s.workers.mu.Lock()
	conns := make([]*workerConn, 0, len(s.workers.conns))
	for _, c := range s.workers.conns {
		conns = append(conns, c)
	}
	s.workers.mu.Unlock()
	for _, c := range conns {
		s.checkWorkerCert(ctx, c, now)
	}
}

func (s *Server) checkServerCert(ctx context.Context, now time.Time) {
	a := s.cfg.Authority
	c := a.ServerCert()
	subject := "server/" + s.cfg.ReplicaID
	s.certMetrics.expiry.WithLabelValues("server", subject).Set(float64(c.NotAfter.Unix()))
	// A certificate cut short by its CA's own end is not renewed: a new
	// one would end no later (the CA's expiry metric and alert cover it).
	expiring := c.NotAfter.Sub(now) < s.cfg.RenewBefore && a.CA().Cert.NotAfter.After(c.NotAfter)
	if a.OwnServerCert() || (!expiring && bytes.Equal(c.AuthorityKeyId, a.CA().Cert.SubjectKeyId)) {
		return
	}
	if expiring {
		s.publish(ctx, eventbus.New("certificate", subject, &hodeiv1.CertificateExpiring{Subject: subject, Kind: "server", NotAfter: timestamppb.New(c.NotAfter)}))
	}
	n, err := a.RenewServer()
	if err != nil {
		s.certMetrics.rotations.WithLabelValues("server", "failure").Inc()
		s.publish(ctx, eventbus.New("certificate", subject, &hodeiv1.RotationFailed{Subject: subject, Kind: "server", Reason: err.Error()}))
		return
	}
	s.certMetrics.rotations.WithLabelValues("server", "success").Inc()
	s.certMetrics.expiry.WithLabelValues("server", subject).Set(float64(n.NotAfter.Unix()))
	s.log.Info("server certificate rotated", "serial", pki.Serial(n), "not_after", n.NotAfter)
	s.publish(ctx, eventbus.New("certificate", subject, &hodeiv1.CertificateRotated{Subject: subject, Kind: "server", Serial: pki.Serial(n), NotAfter: timestamppb.New(n.NotAfter)}))
}

// checkWorkerCert asks the worker to renew a certificate that expires
// within RenewBefore, that another CA than the signing one signed, or
// that came with another trust bundle than today's (CA rotation: the
// new CA reaches every worker, then signs its certificate), unless a
// renewal is under way or backing off.
func (s *Server) checkWorkerCert(ctx context.Context, c *workerConn, now time.Time) {
	signer := s.cfg.Authority.CA().Cert.SubjectKeyId
	bundle, _ := s.bundle.Load().(string)
	c.mu.Lock()
	cs := &c.cert
	if cs.serial == "" {
		c.mu.Unlock()
		return
	}
	s.certMetrics.expiry.WithLabelValues("worker", c.id).Set(float64(cs.notAfter.Unix()))
	expiring := cs.notAfter.Sub(now) < s.cfg.RenewBefore && s.cfg.Authority.CA().Cert.NotAfter.After(cs.notAfter)
	if !expiring && bytes.Equal(cs.issuer, signer) && (cs.bundle == bundle || bundle == "") {
		c.mu.Unlock()
		return
	}
	announce := expiring && cs.announced != cs.serial
	if expiring {
		cs.announced = cs.serial
	}
	notAfter := cs.notAfter
	if !cs.asked.IsZero() && now.Sub(cs.asked) > renewTimeout {
		cs.asked = time.Time{}
		s.renewFailedLocked(cs, now)
		c.mu.Unlock()
		s.rotationFailed(ctx, c.id, "the worker did not answer the renewal in time")
		return
	}
	ask := cs.asked.IsZero() && !now.Before(cs.nextTry)
	if ask {
		cs.asked = now
	}
	c.mu.Unlock()
	if announce {
		s.publish(ctx, eventbus.New("worker", c.id, &hodeiv1.CertificateExpiring{Subject: "worker/" + c.id, Kind: "worker", NotAfter: timestamppb.New(notAfter)}))
	}
	if ask {
		c.send(&hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_RenewCertificate{RenewCertificate: &hodeiv1.RenewCertificate{}}})
	}
}

// renewFailedLocked backs the next try off: the check interval, doubled
// per failure, at most a quarter of the renewal margin.
func (s *Server) renewFailedLocked(cs *certState, now time.Time) {
	cs.failures++
	wait := s.cfg.CertCheckInterval << min(cs.failures-1, 16)
	cs.nextTry = now.Add(min(wait, max(s.cfg.RenewBefore/4, s.cfg.CertCheckInterval)))
}

// certificateRequest signs a worker's renewal request, records it as
// pending and sends it.
func (s *Server) certificateRequest(ctx context.Context, c *workerConn, req *hodeiv1.CertificateRequest) {
	if s.cfg.Authority == nil {
		return
	}
	cert, err := s.issue(req.Csr, c.id)
	if err == nil && s.badRenewal(c) {
		cert.PEM, err = s.wrongIdentity(req.Csr)
	}
	if err == nil {
		err = s.store.WorkerCertPending(ctx, c.id, cert)
	}
	if err != nil {
		s.workerRenewFailed(ctx, c, fmt.Sprintf("issue: %v", err))
		return
	}
	bundle := s.cfg.Authority.Bundle()
	c.mu.Lock()
	c.cert.sent = bundleID(bundle)
	c.mu.Unlock()
	c.send(&hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_Certificate{Certificate: &hodeiv1.IssuedCertificate{
		Certificate: string(cert.PEM), TrustBundle: string(bundle)}}})
}

// badRenewal reports whether this worker's renewal is to be spoiled (the
// BadRenewals test hook: its first ones).
func (s *Server) badRenewal(c *workerConn) bool {
	if s.cfg.BadRenewals <= 0 {
		return false
	}
	s.badMu.Lock()
	defer s.badMu.Unlock()
	if s.bad == nil {
		s.bad = map[string]int{}
	}
	s.bad[c.id]++
	return s.bad[c.id] <= s.cfg.BadRenewals
}

// wrongIdentity signs csr for another worker: a certificate the agent
// must refuse.
func (s *Server) wrongIdentity(csr []byte) ([]byte, error) {
	c, err := s.cfg.Authority.SignWorker(csr, "00000000-0000-0000-0000-000000000000")
	if err != nil {
		return nil, err
	}
	return pki.EncodeCert(c), nil
}

// certificateResult records what the worker did with its renewal.
func (s *Server) certificateResult(ctx context.Context, c *workerConn, res *hodeiv1.CertificateResult) {
	if res.Error != "" {
		s.workerRenewFailed(ctx, c, "the worker refused the certificate: "+res.Error)
		return
	}
	notAfter, err := s.store.WorkerCertInstalled(ctx, c.id, res.Serial)
	if err != nil {
		s.workerRenewFailed(ctx, c, fmt.Sprintf("record: %v", err))
		return
	}
	c.mu.Lock()
	c.cert = certState{serial: res.Serial, notAfter: notAfter, issuer: s.cfg.Authority.CA().Cert.SubjectKeyId, bundle: c.cert.sent}
	c.mu.Unlock()
	s.certMetrics.rotations.WithLabelValues("worker", "success").Inc()
	s.certMetrics.expiry.WithLabelValues("worker", c.id).Set(float64(notAfter.Unix()))
	s.log.Info("worker certificate rotated", "worker_id", c.id, "serial", res.Serial, "not_after", notAfter)
}

func (s *Server) workerRenewFailed(ctx context.Context, c *workerConn, reason string) {
	c.mu.Lock()
	c.cert.asked = time.Time{}
	s.renewFailedLocked(&c.cert, time.Now())
	c.mu.Unlock()
	if err := s.store.WorkerRotationFailed(ctx, c.id, reason); err != nil {
		s.log.Warn("record rotation failure", "worker_id", c.id, "err", err)
	}
	s.certMetrics.rotations.WithLabelValues("worker", "failure").Inc()
	s.log.Warn("worker certificate rotation failed", "worker_id", c.id, "reason", reason)
}

// rotationFailed records a renewal the worker never answered.
func (s *Server) rotationFailed(ctx context.Context, id, reason string) {
	if err := s.store.WorkerRotationFailed(ctx, id, reason); err != nil {
		s.log.Warn("record rotation failure", "worker_id", id, "err", err)
	}
	s.certMetrics.rotations.WithLabelValues("worker", "failure").Inc()
}

func (s *Server) publish(ctx context.Context, ev eventbus.Event) {
	if err := s.store.PublishEvents(ctx, ev); err != nil {
		s.log.Warn("publish", "type", ev.Type, "err", err)
	}
}

// certOf is a verified peer certificate's state for a new stream: the
// agent is taken to have the bundle of the moment (it got it at
// enrollment, or with its last renewal; a CA rotation sends the new
// bundle to every stream open).
func (s *Server) certOf(st *tls.ConnectionState) certState {
	if st == nil || len(st.PeerCertificates) == 0 {
		return certState{}
	}
	leaf := st.PeerCertificates[0]
	bundle, _ := s.bundle.Load().(string)
	return certState{serial: pki.Serial(leaf), notAfter: leaf.NotAfter, issuer: leaf.AuthorityKeyId, bundle: bundle}
}

// bundleID identifies a trust bundle.
func bundleID(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
