package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Pool returns a certificate pool of a PEM trust bundle.
func Pool(bundle []byte) (*x509.CertPool, error) {
	certs, err := ParseCertificates(bundle)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, nil
}

// CheckWorkerCert checks a certificate a worker is given before it uses
// it: it parses, chains to the trust bundle for client authentication at
// now, names workerID and certifies key's public key. It returns the
// certificate ready for tls.
func CheckWorkerCert(certPEM []byte, key crypto.Signer, bundle []byte, workerID string, now time.Time) (*tls.Certificate, error) {
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	roots, err := Pool(bundle)
	if err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("certificate does not verify: %w", err)
	}
	if id, ok := WorkerID(leaf); !ok || id != workerID {
		return nil, fmt.Errorf("certificate names worker %q, not %q", id, workerID)
	}
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		return nil, errors.New("certificate is not for this worker's key")
	}
	chain := make([][]byte, len(certs))
	for i, c := range certs {
		chain[i] = c.Raw
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// Holder holds the certificate a TLS endpoint presents and swaps it
// atomically: connections made after a swap present the new one, those
// already made are left alone (hot reload without reconnecting).
type Holder struct {
	cert atomic.Pointer[tls.Certificate]
}

// NewHolder returns a holder of c.
func NewHolder(c *tls.Certificate) *Holder {
	h := &Holder{}
	h.cert.Store(c)
	return h
}

// Set switches to c.
func (h *Holder) Set(c *tls.Certificate) { h.cert.Store(c) }

// Get returns the current certificate (nil when none).
func (h *Holder) Get() *tls.Certificate { return h.cert.Load() }

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (h *Holder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := h.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no certificate")
}

// GetClientCertificate presents the current certificate
// (tls.Config.GetClientCertificate); none is an empty one.
func (h *Holder) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := h.cert.Load(); c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil
}
