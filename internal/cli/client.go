package cli

import (
	"net/http"
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

// dial builds gRPC clients for addr (host:port) over cleartext HTTP/2. It
// does not connect; the first call does, and fails when the server does
// not answer within --connect-timeout.
func (e *env) dial(addr string) *clients {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	transport := &http.Transport{
		Protocols:   p,
		DialContext: dialer(addr, e.connectTimeout),
		// Pings find a dead connection under a long-lived stream.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	token := e.token
	if token == "" {
		token = e.clientSettings().Token
	}
	hc := &http.Client{Transport: bearer{base: transport, token: token}}
	base := "http://" + addr
	return &clients{
		addr:      addr,
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
// answering.
func transient(err error) bool {
	if err == nil {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal,
		connect.CodeAborted, connect.CodeDeadlineExceeded, connect.CodeResourceExhausted:
		return true
	}
	return false
}
