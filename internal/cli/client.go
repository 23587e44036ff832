package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
)

// clients are the service clients of one server, over one h2c transport.
type clients struct {
	addr      string
	http      *http.Client
	jobs      hodeiv1connect.JobServiceClient
	events    hodeiv1connect.EventServiceClient
	providers hodeiv1connect.ProviderServiceClient
	webhooks  hodeiv1connect.WebhookServiceClient
	jobTypes  hodeiv1connect.JobTypeServiceClient
	secrets   hodeiv1connect.SecretServiceClient
	tokens    hodeiv1connect.TokenServiceClient
}

// dial builds gRPC clients for addr: over TLS for host:port, trusting
// --ca-file, else the configuration file's CA, else the system's roots;
// over cleartext HTTP/2 for http://host:port. It does not connect; the
// first call does, and fails when the server does not answer within
// --connect-timeout.
func (e *env) dial(addr string) *clients {
	p := new(http.Protocols)
	hostPort, plain := strings.CutPrefix(addr, "http://")
	transport := &http.Transport{
		Protocols:   p,
		DialContext: dialer(hostPort, e.connectTimeout),
		// Pings find a dead connection under a long-lived stream.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	token := e.token
	if token == "" {
		token = e.clientSettings().Token
	}
	base := "http://" + hostPort
	if plain {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP2(true)
		transport.TLSClientConfig = e.clientTLS()
		base = "https://" + hostPort
	}
	hc := &http.Client{Transport: bearer{base: transport, token: token}}
	return &clients{
		addr:      hostPort,
		http:      hc,
		jobs:      hodeiv1connect.NewJobServiceClient(hc, base, connect.WithGRPC()),
		events:    hodeiv1connect.NewEventServiceClient(hc, base, connect.WithGRPC()),
		providers: hodeiv1connect.NewProviderServiceClient(hc, base, connect.WithGRPC()),
		webhooks:  hodeiv1connect.NewWebhookServiceClient(hc, base, connect.WithGRPC()),
		jobTypes:  hodeiv1connect.NewJobTypeServiceClient(hc, base, connect.WithGRPC()),
		secrets:   hodeiv1connect.NewSecretServiceClient(hc, base, connect.WithGRPC()),
		tokens:    hodeiv1connect.NewTokenServiceClient(hc, base, connect.WithGRPC()),
	}
}

// clientTLS trusts --ca-file, else the configuration file's CA, else the
// system's roots. A CA that cannot be read is reported and the system's
// roots used: the server's certificate then fails to verify, which says
// what is wrong.
func (e *env) clientTLS() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	bundle := []byte(e.clientSettings().CA)
	if e.caFile != nil && *e.caFile != "" {
		b, err := e.readFile(*e.caFile)
		if err != nil {
			fmt.Fprintf(e.Err, "hodei: --ca-file: %v\n", err)
			return cfg
		}
		bundle = b
	}
	if len(bundle) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(bundle) {
			fmt.Fprintln(e.Err, "hodei: the CA bundle holds no PEM certificate")
			return cfg
		}
		cfg.RootCAs = pool
	}
	return cfg
}

func (c *clients) close() { c.http.CloseIdleConnections() }

// bearer sends the API token, when there is one, with every request.
type bearer struct {
	base  *http.Transport
	token string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.base.RoundTrip(r)
}

func (b bearer) CloseIdleConnections() { b.base.CloseIdleConnections() }

// transient reports whether a stream that failed with err is worth
// re-opening: the server went away or broke the connection, rather than
// answering. Canceled counts when the command's own context is not done:
// a server killed mid-stream resets the connection, which the client
// reports as a cancelled stream.
func transient(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal, connect.CodeCanceled,
		connect.CodeAborted, connect.CodeDeadlineExceeded, connect.CodeResourceExhausted:
		return true
	}
	return false
}
