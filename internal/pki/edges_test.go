package pki

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// TestParseKeyFormats: a CA key is read as PKCS #8, SEC 1 or PKCS #1;
// a key that cannot sign and text that is no key are refused.
func TestParseKeyFormats(t *testing.T) {
	ec := mustKey(t).(*ecdsa.PrivateKey)
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ed, err := x509.MarshalPKCS8PrivateKey(edKey)
	if err != nil {
		t.Fatal(err)
	}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	xder, err := x509.MarshalPKCS8PrivateKey(x)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		pem     []byte
		wantErr string
	}{
		{"SEC 1", pemOf("EC PRIVATE KEY", sec1), ""},
		{"PKCS #1", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), ""},
		{"PKCS #8", pemOf("PRIVATE KEY", ed), ""},
		{"a key that cannot sign", pemOf("PRIVATE KEY", xder), "cannot sign"},
		{"corrupt", pemOf("EC PRIVATE KEY", []byte("not DER")), "asn1"},
		{"not PEM", []byte("hello"), "no PEM block"},
	} {
		k, err := ParseKey(c.pem)
		switch {
		case c.wantErr == "" && (err != nil || k == nil):
			t.Errorf("%s: %v", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.wantErr)
		}
	}
}

// TestParseCARefusesWhatIsNoCA: a worker's certificate with its own key,
// a certificate file without a certificate and a key file without a key
// (or a certificate in its place) are refused, naming which; a CA written to files loads back.
func TestParseCARefusesWhatIsNoCA(t *testing.T) {
	ca := mustCA(t)
	key := mustKey(t)
	leaf := issue(t, ca, key, "w1", time.Now(), time.Hour)
	leafKey, err := EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := EncodeKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		cert, key []byte
		wantErr   string
	}{
		{"a worker's certificate", leaf, leafKey, "not a CA"},
		{"no certificate", caKey, caKey, "CA certificate: no PEM certificate"},
		{"a certificate for a key", ca.PEM, ca.PEM, "CA key: a CERTIFICATE block is not a private key"},
		{"no key", ca.PEM, []byte("none"), "CA key: no PEM block"},
	} {
		if _, err := ParseCA(c.cert, c.key); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: %v, want %q", c.name, err, c.wantErr)
		}
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if _, err := LoadCAFiles(certFile, keyFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing certificate file: %v", err)
	}
	if err := os.WriteFile(certFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCAFiles(certFile, keyFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing key file: %v", err)
	}
	if err := os.WriteFile(keyFile, caKey, 0o600); err != nil {
		t.Fatal(err)
	}
	back, err := LoadCAFiles(certFile, keyFile)
	if err != nil || !back.Cert.Equal(ca.Cert) {
		t.Errorf("loaded CA: %v", err)
	}
}

// TestCertificatesEndWithTheirCA: a certificate never outlives the CA
// that signs it, however long its requested lifetime; requests that do
// not parse or whose signature fails are refused.
func TestCertificatesEndWithTheirCA(t *testing.T) {
	ca := mustCA(t) // a day
	csr, err := NewCSR(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	w, err := ca.SignWorker(csr, "w1", time.Now(), 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !w.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("worker certificate ends %v, want the CA's end %v", w.NotAfter, ca.Cert.NotAfter)
	}
	s, err := ca.IssueServer([]string{"localhost", ""}, time.Now(), 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Leaf.NotAfter.Equal(ca.Cert.NotAfter) || len(s.Leaf.DNSNames) != 1 {
		t.Errorf("server certificate ends %v for %q, want the CA's end %v for localhost", s.Leaf.NotAfter, s.Leaf.DNSNames, ca.Cert.NotAfter)
	}
	short, err := ca.SignWorker(csr, "w1", time.Now(), time.Hour)
	if err != nil || !short.NotAfter.Before(ca.Cert.NotAfter) {
		t.Errorf("an hour's certificate ends %v (%v), want before the CA's end", short.NotAfter, err)
	}
	tampered := bytes.Clone(csr)
	tampered[len(tampered)-1] ^= 0xff // the signature's last byte
	for name, der := range map[string][]byte{"junk": []byte("junk"), "a bad signature": tampered} {
		if _, err := ca.SignWorker(der, "w1", time.Now(), time.Hour); err == nil || !strings.Contains(err.Error(), "certificate request") {
			t.Errorf("%s: %v, want the certificate request refused", name, err)
		}
	}
}

// TestWorkerCertWithItsChain: a worker certificate sent with the CA
// after it verifies and keeps the chain; a bundle without a certificate
// is refused.
func TestWorkerCertWithItsChain(t *testing.T) {
	ca := mustCA(t)
	key := mustKey(t)
	chain := append(issue(t, ca, key, "w1", time.Now(), time.Hour), ca.PEM...)
	c, err := CheckWorkerCert(chain, key, ca.PEM, "w1", time.Now())
	if err != nil || len(c.Certificate) != 2 {
		t.Fatalf("chain: %v, %v; want the leaf and its CA", c, err)
	}
	withKey := append(pemOf("PRIVATE KEY", []byte("ignored")), ca.PEM...)
	if certs, err := ParseCertificates(withKey); err != nil || len(certs) != 1 {
		t.Errorf("a bundle with a key block: %d certificates, %v; want the CA only", len(certs), err)
	}
	if _, err := CheckWorkerCert(chain, key, []byte("no bundle"), "w1", time.Now()); err == nil || !strings.Contains(err.Error(), "trust bundle") {
		t.Errorf("a bad bundle: %v", err)
	}
	if _, err := ClientTLS([]byte("no bundle"), nil); err == nil {
		t.Error("a client trusting a bad bundle")
	}
}

// TestAuthorityKeepsItsCAInTheBundle: a bundle set without the signing
// CA gets it back; certificates last 90 days by default, at most as long
// as the CA; an authority needs a CA.
func TestAuthorityKeepsItsCAInTheBundle(t *testing.T) {
	if _, err := NewAuthority(AuthorityConfig{}); err == nil {
		t.Error("an authority without a CA")
	}
	ca, other := mustCA(t), mustCA(t)
	a, err := NewAuthority(AuthorityConfig{CA: ca, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.CertTTL() != 90*24*time.Hour || a.OwnServerCert() {
		t.Errorf("ttl %v, own certificate %v; want 90 days, issued", a.CertTTL(), a.OwnServerCert())
	}
	if err := a.SetBundle(other.PEM); err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCertificates(a.Bundle())
	if err != nil || len(certs) != 2 || !certs[0].Equal(other.Cert) || !certs[1].Equal(ca.Cert) {
		t.Errorf("bundle of %d certificates (%v), want the one set and the signing CA", len(certs), err)
	}
	if err := a.SetBundle([]byte("junk")); err == nil {
		t.Error("a bundle without certificates was taken")
	}
	csr, err := NewCSR(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	w, err := a.SignWorker(csr, "w1")
	if err != nil || !w.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("worker certificate ends %v (%v), want with its CA", w.NotAfter, err)
	}
}

// TestOperatorServerCertificate: the operator's server certificate is
// served as it is and never reissued, and the certificates of its chain
// join the bundle workers are given.
func TestOperatorServerCertificate(t *testing.T) {
	ca, issuer := mustCA(t), mustCA(t)
	own, err := issuer.IssueServer([]string{"hodei.example"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	own.Certificate = append(own.Certificate, issuer.Cert.Raw)
	a, err := NewAuthority(AuthorityConfig{CA: ca, ServerCert: own})
	if err != nil {
		t.Fatal(err)
	}
	if !a.OwnServerCert() || !a.ServerCert().Equal(own.Leaf) {
		t.Errorf("served %v, want the operator's", a.ServerCert().Subject)
	}
	if _, err := a.RenewServer(); err == nil || !strings.Contains(err.Error(), "--tls-cert-file") {
		t.Errorf("renewal of the operator's certificate: %v", err)
	}
	certs, err := ParseCertificates(a.Bundle())
	if err != nil || len(certs) != 2 || !certs[0].Equal(ca.Cert) || !certs[1].Equal(issuer.Cert) {
		t.Errorf("bundle of %d certificates (%v), want the CA and the chain's issuer", len(certs), err)
	}
}

// TestHolderWithoutACertificate: a server without a certificate fails
// the handshake; a client without one presents an empty one.
func TestHolderWithoutACertificate(t *testing.T) {
	h := NewHolder(nil)
	if _, err := h.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Error("a server certificate from an empty holder")
	}
	if c, err := h.GetClientCertificate(&tls.CertificateRequestInfo{}); err != nil || len(c.Certificate) != 0 {
		t.Errorf("client certificate %v, %v; want an empty one", c, err)
	}
	for addr, want := range map[string]string{"h:1": "https://h:1", "http://h:1": "http://h:1", "unix:///run/h": "unix:///run/h"} {
		if got := BaseURL(addr, true); got != want {
			t.Errorf("BaseURL(%q) = %q, want %q", addr, got, want)
		}
	}
}
