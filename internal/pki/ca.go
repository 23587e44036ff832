package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// WorkerURIPrefix starts the URI SAN of a worker certificate.
const WorkerURIPrefix = "hodei://worker/"

// clockSkew backdates NotBefore so that a peer whose clock is a little
// behind accepts a fresh certificate.
const clockSkew = time.Minute

// CA is a certificate authority that can sign: its certificate and key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is the certificate, PEM encoded.
	PEM []byte
}

// GenerateKey returns a new ECDSA P-256 key.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// EncodeKey returns key as a PEM "PRIVATE KEY" (PKCS #8) block.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey parses a PEM private key (PKCS #8, SEC 1 or PKCS #1).
func ParseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("a %s block is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", k)
	}
	return s, nil
}

// NewCA returns a self-signed CA with key, valid from now for ttl.
func NewCA(key crypto.Signer, name string, now time.Time, ttl time.Duration) (*CA, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Hodei"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return newCA(der, key)
}

func newCA(der []byte, key crypto.Signer) (*CA, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// ParseCA returns the CA of a PEM certificate and its PEM key, checking
// that they belong together and that the certificate may sign.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	ca, err := newCA(certs[0].Raw, key)
	if err != nil {
		return nil, err
	}
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("CA certificate: not a CA (basic constraints or key usage cert sign missing)")
	}
	if !samePublicKey(ca.Cert.PublicKey, key.Public()) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	return ca, nil
}

// LoadCAFiles reads a CA from its certificate and key files.
func LoadCAFiles(certFile, keyFile string) (*CA, error) {
	c, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	k, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	return ParseCA(c, k)
}

// ParseCertificates parses every CERTIFICATE block of a PEM bundle; it
// fails on an empty bundle.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// SignWorker signs a worker's certificate request: the certificate's
// identity is workerID (URI SAN hodei://worker/<id>), whatever the
// request asks; it is valid from now for ttl (at most the CA's lifetime)
// for client authentication only.
func (ca *CA) SignWorker(csrDER []byte, workerID string, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	u, err := url.Parse(WorkerURIPrefix + workerID)
	if err != nil {
		return nil, fmt.Errorf("worker id %q: %w", workerID, err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "worker " + workerID, Organization: []string{"Hodei"}},
		URIs:        []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.sign(tmpl, csr.PublicKey, now, ttl)
}

// IssueServer issues a server certificate for hosts (IP addresses or DNS
// names) with a new key, valid from now for ttl.
func (ca *CA) IssueServer(hosts []string, now time.Time, ttl time.Duration) (*tls.Certificate, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "hodei server", Organization: []string{"Hodei"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, err := ca.sign(tmpl, key.Public(), now, ttl)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// NewCSR returns a DER certificate request for key. The CA sets the
// identity; the request only proves possession of the key.
func NewCSR(key crypto.Signer) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "hodei worker"}}, key)
}

// Serial is a certificate's serial number in hex: how the workers table
// records it.
func Serial(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// Fingerprint is the SHA-256 of a certificate's DER, in hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// EncodeCert returns a certificate as PEM.
func EncodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// WorkerID returns the worker id of a worker certificate (its
// hodei://worker/ URI SAN).
func WorkerID(c *x509.Certificate) (string, bool) {
	for _, u := range c.URIs {
		if id, ok := strings.CutPrefix(u.String(), WorkerURIPrefix); ok && id != "" {
			return id, true
		}
	}
	return "", false
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// Ephemeral returns a new CA with a new key that lives for a day: for
// benchmarks and tests, whose platforms live no longer than they do.
func Ephemeral(name string) (*CA, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	return NewCA(key, name, time.Now(), 24*time.Hour)
}
