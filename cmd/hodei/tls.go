package main

import (
	"crypto"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/platform"
)

// tlsFlags are the certificate flags of server and dev.
type tlsFlags struct {
	caCert, caKey     string
	trustCAs          string
	tlsCert, tlsKey   string
	sans              listFlag
	insecurePlaintext bool
	pc                *platform.TLSConfig
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return fmt.Sprint(*l) }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func (f *tlsFlags) register(fs *flag.FlagSet, pc *platform.TLSConfig) {
	f.pc = pc
	fs.StringVar(&f.caCert, "ca-cert-file", os.Getenv("HODEI_CA_CERT_FILE"), "PEM certificate of your own CA (with --ca-key-file); default: the CA of --ca-key-file recorded in the database, else a new one")
	fs.StringVar(&f.caKey, "ca-key-file", os.Getenv("HODEI_CA_KEY_FILE"), "PEM key of the CA that signs worker and server certificates; created (mode 0600) when missing. Keep it safe and give every replica the same")
	fs.StringVar(&f.trustCAs, "trust-ca-file", "", "PEM file of CA certificates to add to the trust bundle without signing with them (first step of a CA rotation)")
	fs.StringVar(&f.tlsCert, "tls-cert-file", "", "PEM certificate chain of your own server certificate (with --tls-key-file); default: one issued by the CA")
	fs.StringVar(&f.tlsKey, "tls-key-file", "", "PEM key of --tls-cert-file")
	fs.Var(&f.sans, "tls-san", "extra name or address of the server's certificate (repeatable); 127.0.0.1, ::1, localhost, the host name and the listen address are always in it")
	fs.BoolVar(&f.insecurePlaintext, "insecure-plaintext", false, "INSECURE: serve cleartext HTTP/2 without TLS; anyone who reaches the port can use the API")
	fs.DurationVar(&pc.CertTTL, "cert-ttl", 90*24*time.Hour, "lifetime of the certificates issued to workers and to the server")
	fs.DurationVar(&pc.RenewBefore, "cert-renew-before", 30*24*time.Hour, "certificates with less than this left are renewed")
	fs.DurationVar(&pc.CheckInterval, "cert-check-interval", 24*time.Hour, "how often certificate expiries are checked")
}

// load fills the TLS config from the flags; defaultKey is where dev keeps
// a CA key when --ca-key-file is not given ("": a key in memory).
func (f *tlsFlags) load(defaultKey string, dev bool) error {
	pc := f.pc
	pc.SANs = f.sans
	pc.InsecurePlaintext = f.insecurePlaintext
	if os.Getenv("HODEI_TEST_BAD_RENEWALS") == "1" {
		pc.BadRenewals = 1
	}
	if pc.RenewBefore >= pc.CertTTL {
		return fmt.Errorf("--cert-renew-before %v: must be shorter than --cert-ttl %v", pc.RenewBefore, pc.CertTTL)
	}
	if pc.CheckInterval <= 0 {
		return fmt.Errorf("--cert-check-interval %v: must be positive", pc.CheckInterval)
	}
	if f.insecurePlaintext {
		return nil
	}
	if f.trustCAs != "" {
		b, err := os.ReadFile(f.trustCAs)
		if err != nil {
			return fmt.Errorf("--trust-ca-file: %w", err)
		}
		pc.TrustCAs = b
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if f.tlsCert != "" {
		c, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("--tls-cert-file: %w", err)
		}
		pc.ServerCert = &c
	}
	switch {
	case f.caCert != "":
		if f.caKey == "" {
			return errors.New("--ca-cert-file needs --ca-key-file")
		}
		ca, err := pki.LoadCAFiles(f.caCert, f.caKey)
		if err != nil {
			return fmt.Errorf("--ca-cert-file/--ca-key-file: %w", err)
		}
		pc.CA = ca
	case f.caKey != "":
		k, err := caKey(f.caKey)
		if err != nil {
			return fmt.Errorf("--ca-key-file: %w", err)
		}
		pc.CAKey = k
	case dev && defaultKey != "":
		k, err := caKey(defaultKey)
		if err != nil {
			return fmt.Errorf("CA key: %w", err)
		}
		pc.CAKey = k
	case dev:
		k, err := pki.GenerateKey()
		if err != nil {
			return err
		}
		pc.CAKey = k
	}
	return nil
}

// caKey reads the CA key at path, or creates it (mode 0600) when missing.
func caKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return pki.ParseKey(b)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	k, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	pemKey, err := pki.EncodeKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// O_EXCL: a replica starting at the same moment keeps its own file.
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return caKey(path)
		}
		return nil, err
	}
	if _, err := fh.Write(pemKey); err != nil {
		fh.Close()
		return nil, err
	}
	return k, fh.Close()
}
