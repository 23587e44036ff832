package agent

import (
	"crypto"
	"errors"
	"net/http"
	"sync"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/pki"
)

// identity is the worker's TLS identity: its key (made in memory, never
// written), its client certificate, the trust bundle, and the HTTP client
// that presents the one and verifies the server against the other. A
// renewal switches the certificate in place: the stream open goes on, and
// the next connection presents the new one (GetClientCertificate).
type identity struct {
	cert *pki.Holder

	mu      sync.Mutex
	bundle  []byte
	client  *http.Client
	pending crypto.Signer // the key of a renewal under way
}

func newIdentity(bundle []byte) (*identity, error) {
	id := &identity{cert: pki.NewHolder(nil)}
	if err := id.setBundle(bundle); err != nil {
		return nil, err
	}
	return id, nil
}

// setBundle trusts bundle from the next connection on: a new client,
// whose connections are all made after the call (an HTTP/2 connection of
// the old one would present the certificate of its handshake).
func (id *identity) setBundle(bundle []byte) error {
	cfg, err := pki.ClientTLS(bundle, id.cert)
	if err != nil {
		return err
	}
	id.mu.Lock()
	old := id.client
	id.bundle, id.client = bundle, pki.HTTPClient(cfg)
	id.mu.Unlock()
	if old != nil {
		old.CloseIdleConnections()
	}
	return nil
}

func (id *identity) httpClient() *http.Client {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.client
}

func (id *identity) trust() []byte {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.bundle
}

// newRequest makes a key and a certificate request for it.
func newRequest() (crypto.Signer, []byte, error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return nil, nil, err
	}
	return key, csr, nil
}

// install checks an issued certificate for key and switches to it.
func (id *identity) install(workerID string, key crypto.Signer, certPEM, bundle []byte) (serial string, err error) {
	if len(bundle) == 0 {
		bundle = id.trust()
	}
	c, err := pki.CheckWorkerCert(certPEM, key, bundle, workerID, time.Now())
	if err != nil {
		return "", err
	}
	id.cert.Set(c)
	if err := id.setBundle(bundle); err != nil {
		return "", err
	}
	return pki.Serial(c.Leaf), nil
}

// renewCert answers the server's RenewCertificate with a request for a
// new key.
func (a *Agent) renewCert() {
	if a.id == nil {
		return
	}
	key, csr, err := newRequest()
	if err != nil {
		a.sendNow(certResult("", err))
		return
	}
	a.id.mu.Lock()
	a.id.pending = key
	a.id.mu.Unlock()
	a.sendNow(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_CertificateRequest{CertificateRequest: &hodeiv1.CertificateRequest{Csr: csr}}})
}

// installCert checks a renewed certificate and switches to it, or keeps
// the current one, and tells the server which.
func (a *Agent) installCert(m *hodeiv1.IssuedCertificate) {
	if a.id == nil {
		return
	}
	a.id.mu.Lock()
	key := a.id.pending
	a.id.pending = nil
	a.id.mu.Unlock()
	if key == nil {
		a.sendNow(certResult("", errNoRenewal))
		return
	}
	serial, err := a.id.install(a.workerID, key, []byte(m.Certificate), []byte(m.TrustBundle))
	if err != nil {
		a.log.Warn("renewed certificate refused; keeping the current one", "err", err)
	} else {
		a.log.Info("client certificate renewed", "serial", serial)
	}
	a.sendNow(certResult(serial, err))
}

var errNoRenewal = errors.New("no renewal under way")

func certResult(serial string, err error) *hodeiv1.ConnectRequest {
	r := &hodeiv1.CertificateResult{Serial: serial}
	if err != nil {
		r.Error = err.Error()
	}
	return &hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_CertificateResult{CertificateResult: r}}
}
