package pki

import (
	"crypto/tls"
	"net/http"
	"strings"
)

// ClientTLS returns the TLS configuration of a client that trusts the
// bundle (PEM) and presents the holder's certificate when the server asks
// (nil: none).
func ClientTLS(bundle []byte, cert *Holder) (*tls.Config, error) {
	pool, err := Pool(bundle)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}, RootCAs: pool}
	if cert != nil {
		cfg.GetClientCertificate = cert.GetClientCertificate
	}
	return cfg, nil
}

// HTTPClient returns an HTTP/2 client: over TLS with cfg, or cleartext
// (h2c) when cfg is nil.
func HTTPClient(cfg *tls.Config) *http.Client {
	p := new(http.Protocols)
	if cfg == nil {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP2(true)
	}
	return &http.Client{Transport: &http.Transport{Protocols: p, TLSClientConfig: cfg}}
}

// BaseURL makes a server address a URL: https:// when tls, else http://;
// an address that is already a URL is kept.
func BaseURL(addr string, tls bool) string {
	if strings.Contains(addr, "://") {
		return addr
	}
	if tls {
		return "https://" + addr
	}
	return "http://" + addr
}
