package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"
)

// AuthorityConfig configures an Authority.
type AuthorityConfig struct {
	// CA signs the workers' certificates and the server's; required.
	CA *CA
	// Bundle is the trust bundle (PEM); default the CA's certificate.
	Bundle []byte
	// Hosts are the names and addresses the server's certificate is
	// issued for.
	Hosts []string
	// CertTTL is the lifetime of the certificates issued; default 90 days.
	CertTTL time.Duration
	// ServerCert, when set, is the operator's own server certificate: it
	// is served as it is and never reissued. The certificates of its
	// chain past the leaf join the bundle that workers are given.
	ServerCert *tls.Certificate
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Authority is a replica's side of the PKI: it signs workers'
// certificates, holds the server's certificate and the trust bundle, and
// builds the server's TLS configuration (which follows both as they
// change).
type Authority struct {
	cfg    AuthorityConfig
	server *Holder

	mu     sync.Mutex
	ca     *CA
	bundle []byte
	pool   *x509.CertPool
}

// NewAuthority returns an authority whose server certificate is issued
// (or the operator's).
func NewAuthority(cfg AuthorityConfig) (*Authority, error) {
	if cfg.CA == nil {
		return nil, errors.New("pki: a CA is required")
	}
	if cfg.CertTTL <= 0 {
		cfg.CertTTL = 90 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Bundle) == 0 {
		cfg.Bundle = cfg.CA.PEM
	}
	a := &Authority{cfg: cfg, ca: cfg.CA, server: NewHolder(cfg.ServerCert)}
	if err := a.SetBundle(cfg.Bundle); err != nil {
		return nil, err
	}
	if cfg.ServerCert == nil {
		if _, err := a.RenewServer(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// CertTTL is the lifetime of the certificates the authority issues.
func (a *Authority) CertTTL() time.Duration { return a.cfg.CertTTL }

// CA returns the signing CA.
func (a *Authority) CA() *CA {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ca
}

// SetCA makes ca the signing CA (CA rotation); the bundle must already
// hold it for its certificates to be trusted.
func (a *Authority) SetCA(ca *CA) {
	a.mu.Lock()
	a.ca = ca
	a.mu.Unlock()
}

// SetBundle replaces the trust bundle (PEM), which always keeps the
// signing CA's certificate.
func (a *Authority) SetBundle(bundle []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.cfg.ServerCert; c != nil {
		bundle = append([]byte{}, bundle...)
		for _, der := range c.Certificate[1:] {
			bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		}
	}
	pool, err := Pool(bundle)
	if err != nil {
		return err
	}
	if !poolHas(bundle, a.ca.Cert) {
		bundle = append(append([]byte{}, bundle...), a.ca.PEM...)
		pool.AddCert(a.ca.Cert)
	}
	a.bundle, a.pool = bundle, pool
	return nil
}

func poolHas(bundle []byte, c *x509.Certificate) bool {
	certs, _ := ParseCertificates(bundle)
	for _, b := range certs {
		if b.Equal(c) {
			return true
		}
	}
	return false
}

// Bundle returns the trust bundle (PEM).
func (a *Authority) Bundle() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bundle
}

// SignWorker signs a worker's certificate request with its identity.
func (a *Authority) SignWorker(csrDER []byte, workerID string) (*x509.Certificate, error) {
	return a.CA().SignWorker(csrDER, workerID, a.cfg.Now(), a.cfg.CertTTL)
}

// ServerCert returns the certificate the server presents.
func (a *Authority) ServerCert() *x509.Certificate {
	c := a.server.Get()
	if c == nil {
		return nil
	}
	return c.Leaf
}

// OwnServerCert reports whether the server's certificate is the
// operator's (never reissued).
func (a *Authority) OwnServerCert() bool { return a.cfg.ServerCert != nil }

// RenewServer issues a new server certificate and switches to it: new
// connections get it, open ones keep theirs.
func (a *Authority) RenewServer() (*x509.Certificate, error) {
	if a.cfg.ServerCert != nil {
		return nil, errors.New("the server certificate is the operator's (--tls-cert-file): it is not reissued")
	}
	c, err := a.CA().IssueServer(a.cfg.Hosts, a.cfg.Now(), a.cfg.CertTTL)
	if err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	a.server.Set(c)
	return c.Leaf, nil
}

// ServerTLS is the server's TLS configuration: HTTP/2 by ALPN, the
// current server certificate, and client certificates verified against
// the current bundle when a client presents one (workers must; API
// clients need not).
func (a *Authority) ServerTLS() *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		a.mu.Lock()
		pool := a.pool
		a.mu.Unlock()
		return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: base.NextProtos, GetCertificate: a.server.GetCertificate,
			ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}, nil
	}
	return base
}
