package platform

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/store"
)

// TLSConfig is a replica's certificate source.
type TLSConfig struct {
	// InsecurePlaintext serves cleartext h2c without any certificate:
	// anyone who reaches the port can use the API, and workers
	// authenticate with a bearer credential alone.
	InsecurePlaintext bool
	// CA signs the workers' certificates and the server's (bring your own
	// CA). Without it, CAKey does: with the CA certificate of that key
	// recorded in the database, else a new self-signed one recorded there.
	CA    *pki.CA
	CAKey crypto.Signer
	// TrustCAs are more CA certificates (PEM) to record in the trust
	// bundle without signing with them: the first step of a CA rotation.
	TrustCAs []byte
	// ServerCert is the operator's own server certificate (served as it
	// is); default one issued by the CA for the listen address, 127.0.0.1,
	// ::1, localhost, this host's name and SANs.
	ServerCert *tls.Certificate
	SANs       []string
	// CertTTL is the lifetime of issued certificates (default 90 days);
	// RenewBefore how long before expiry they are renewed (30 days);
	// CheckInterval how often expiries are checked (24h).
	CertTTL, RenewBefore, CheckInterval time.Duration
	// BadRenewals, for tests only: see server.Config.BadRenewals.
	BadRenewals int
}

// caLifetime is the lifetime of a CA created from a key.
const caLifetime = 10 * 365 * 24 * time.Hour

// errNoCertSource is why a replica without a certificate source does not start.
var errNoCertSource = errors.New("no certificate source: give --ca-key-file (and --ca-cert-file to bring your own CA), " +
	"or --insecure-plaintext to serve without TLS")

// checkTLS fails at once when there is nothing to serve TLS with.
func checkTLS(c TLSConfig) error {
	if !c.InsecurePlaintext && c.CA == nil && c.CAKey == nil {
		return errNoCertSource
	}
	return nil
}

// authority builds the replica's authority: the CA (recorded in the
// trust bundle in the database), the bundle, the server certificate.
func authority(ctx context.Context, log *slog.Logger, st *store.Store, c TLSConfig, listen string) (*pki.Authority, error) {
	if c.InsecurePlaintext {
		log.Warn("INSECURE: serving plaintext without TLS (--insecure-plaintext): anyone who reaches the port can use the API and impersonate workers")
		return nil, nil
	}
	ca := c.CA
	if ca == nil {
		var err error
		if ca, err = caOfKey(ctx, st, c.CAKey); err != nil {
			return nil, err
		}
	}
	if err := recordAuthorities(ctx, log, st, ca, c); err != nil {
		return nil, err
	}
	bundle, err := st.TrustBundle(ctx)
	if err != nil {
		return nil, err
	}
	a, err := pki.NewAuthority(pki.AuthorityConfig{CA: ca, Bundle: bundle, Hosts: serverHosts(listen, c.SANs), CertTTL: c.CertTTL, ServerCert: c.ServerCert})
	if err != nil {
		return nil, err
	}
	log.Info("serving TLS", "ca", pki.Fingerprint(ca.Cert)[:16], "ca_not_after", ca.Cert.NotAfter, "server_cert_not_after", a.ServerCert().NotAfter)
	return a, nil
}

// recordAuthorities records the CAs to trust in the database: TrustCAs
// and the signing CA, before which the CAs recorded earlier leave the
// bundle after the longest lifetime of a certificate they signed.
func recordAuthorities(ctx context.Context, log *slog.Logger, st *store.Store, ca *pki.CA, c TLSConfig) error {
	if len(c.TrustCAs) > 0 {
		certs, err := pki.ParseCertificates(c.TrustCAs)
		if err != nil {
			return fmt.Errorf("CAs to trust: %w", err)
		}
		for _, t := range certs {
			if !t.IsCA {
				return fmt.Errorf("CAs to trust: %s is not a CA certificate", t.Subject)
			}
			if err := st.AddAuthority(ctx, pki.Fingerprint(t), pki.EncodeCert(t), t.NotAfter); err != nil {
				return fmt.Errorf("record CA: %w", err)
			}
		}
	}
	fp := pki.Fingerprint(ca.Cert)
	if err := st.AddAuthority(ctx, fp, ca.PEM, ca.Cert.NotAfter); err != nil {
		return fmt.Errorf("record CA: %w", err)
	}
	ttl := c.CertTTL
	if ttl <= 0 {
		ttl = 90 * 24 * time.Hour
	}
	leaves := time.Now().Add(ttl)
	n, err := st.RetireOlderAuthorities(ctx, fp, leaves)
	if err != nil {
		return fmt.Errorf("retire older CAs: %w", err)
	}
	if n > 0 {
		log.Info("older CAs leave the trust bundle after the longest certificate lifetime", "cas", n, "leaves_at", leaves)
	}
	return nil
}

// caOfKey finds the recorded CA certificate of key, or creates and
// records one.
func caOfKey(ctx context.Context, st *store.Store, key crypto.Signer) (*pki.CA, error) {
	bundle, err := st.TrustBundle(ctx)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	if certs, err := pki.ParseCertificates(bundle); err == nil {
		for i := len(certs) - 1; i >= 0; i-- {
			if ca, err := pki.ParseCA(pki.EncodeCert(certs[i]), keyPEM); err == nil && time.Until(ca.Cert.NotAfter) > 0 {
				return ca, nil
			}
		}
	}
	host, _ := os.Hostname()
	return pki.NewCA(key, "Hodei CA "+host, time.Now(), caLifetime)
}

// serverHosts are the names the server's certificate is issued for.
func serverHosts(listen string, sans []string) []string {
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			hosts = append(hosts, h)
		}
	}
	return append(hosts, sans...)
}
