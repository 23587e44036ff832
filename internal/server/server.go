// Package server implements Hodei's RPC services over Connect (gRPC,
// gRPC-Web and Connect on one port, h2c for plaintext): the only place
// where proto messages meet the domain, and where domain errors become
// RPC codes. It also holds the set of workers connected to this replica
// (WorkerSet), which the scheduler dispatches to.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/secret"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/tracing"
)

// Config configures a Server.
type Config struct {
	ReplicaID          string        // unique per process; required
	DefaultMaxAttempts int           // for jobs whose spec and type set none; default job.DefaultMaxAttempts
	Lease              time.Duration // a silent worker's attempts are lost after it; default 10s
	HeartbeatInterval  time.Duration // asked of agents; default 2s
	Logger             *slog.Logger
	Registry           *prometheus.Registry // required: /metrics serves it
	// Authority, when set, makes the server serve TLS only and workers
	// authenticate with client certificates it issues. Nil: plaintext
	// h2c, workers authenticate with their credential alone.
	Authority *pki.Authority
	// CertCheckInterval is how often the certificate manager checks
	// expiries (default 24h); RenewBefore how long before its expiry a
	// certificate is renewed (default 30 days).
	CertCheckInterval time.Duration
	RenewBefore       time.Duration
	// BadRenewals, for tests only, spoils the first BadRenewals renewals
	// of each worker (a certificate for another identity, which the agent
	// must refuse).
	BadRenewals int
	// UI, when set, builds the handler served under /ui/ from the
	// handler of the API (the dashboard calls the API through it, with
	// its sessions' tokens).
	UI func(api http.Handler) (http.Handler, error)
	// SecretKeys seals and opens stored secrets; nil turns secrets off
	// (their calls and jobs that reference secrets are refused).
	SecretKeys *secret.Keyring
	// SecretAccess decides who may use which secret; nil allows every
	// caller every secret (no token authentication).
	SecretAccess SecretAccess
	// Tracer, when set, records the spans of job attempts, among them the
	// root span of every attempt the store ends without an agent's result
	// (New registers it with the store's OnAttemptEnd). nil: no tracing.
	Tracer *tracing.Tracer
}

// Server is one replica's API.
type Server struct {
	cfg     Config
	store   *store.Store
	bus     *eventbus.Bus
	log     *slog.Logger
	metrics *metrics
	logs    *logHub
	workers *WorkerSet
	commits *groupCommit // every stream's reports, applied together

	certMetrics *certMetrics
	bundle      atomic.Value // bundleID of the trust bundle of the last check
	badMu       sync.Mutex
	bad         map[string]int // renewals spoiled per worker (BadRenewals)
	stats       *jobStats      // rolling counters of job events (GetJobStats)
	access      SecretAccess
	redact      *attemptRedactors // the second redaction of stored logs
	tokens      *tokenCache       // verified API tokens
}

// New returns a server.
func New(cfg Config, st *store.Store, bus *eventbus.Bus) (*Server, error) {
	if cfg.ReplicaID == "" {
		return nil, errors.New("server: ReplicaID is required")
	}
	if cfg.Registry == nil {
		return nil, errors.New("server: Registry is required")
	}
	if cfg.DefaultMaxAttempts <= 0 {
		cfg.DefaultMaxAttempts = job.DefaultMaxAttempts
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 10 * time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		// Several beats per lease, so that a live worker never looks silent.
		cfg.HeartbeatInterval = min(2*time.Second, cfg.Lease/4)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CertCheckInterval <= 0 {
		cfg.CertCheckInterval = 24 * time.Hour
	}
	if cfg.RenewBefore <= 0 {
		cfg.RenewBefore = 30 * 24 * time.Hour
	}
	if cfg.SecretAccess == nil {
		cfg.SecretAccess = tokenSecretAccess{}
	}
	s := &Server{certMetrics: newCertMetrics(cfg.Registry), access: cfg.SecretAccess, redact: newAttemptRedactors(), cfg: cfg, store: st, bus: bus, log: cfg.Logger, commits: &groupCommit{apply: st.ApplyReports},
		logs: newLogHub(), workers: newWorkerSet(cfg.Tracer), stats: newJobStats(time.Now()), tokens: newTokenCache(st)}
	s.metrics = newMetrics(cfg.Registry, st, s.workers, cfg.Tracer)
	s.workers.resolve = s.resolveSecrets
	if cfg.Tracer.Enabled() {
		st.OnAttemptEnd(s.traceEnd)
	}
	// A token revoked on any replica is dropped here at once.
	bus.OnNotify(store.TokensChannel, s.tokens.invalidate)
	if cfg.Authority != nil {
		s.bundle.Store(bundleID(cfg.Authority.Bundle()))
	}
	// Log output stored on any replica wakes this replica's followers.
	bus.OnNotify(store.LogsChannel, func(jobID string) {
		if jobID == "" {
			s.logs.wakeAll()
		} else {
			s.logs.wake(jobID)
		}
	})
	return s, nil
}

// Workers is the set of workers connected to this replica.
func (s *Server) Workers() *WorkerSet { return s.workers }

// Handler returns the HTTP handler serving every service, gRPC
// reflection, /metrics (for tokens with the metrics scope), /healthz,
// /readyz and, when configured, the dashboard under /ui/. Every call but
// the worker stream's needs an API token (procedureScopes).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	handle := func(path string, h http.Handler) { mux.Handle(path, limitBodies(h)) }
	// Small messages are not worth compressing (most of ours are small).
	// The RPC metrics (and spans) wrap the authentication: refused calls
	// are counted with their code.
	opt := connect.WithHandlerOptions(connect.WithCompressMinBytes(4096), readLimits, connect.WithInterceptors(s.metrics.rpc, authInterceptor{s.tokens}))
	handle(hodeiv1connect.NewJobServiceHandler(jobService{s}, opt))
	// The worker stream is never compressed: it carries many messages a
	// second per worker, and workers sit on the same network as the server.
	path, worker := hodeiv1connect.NewWorkerServiceHandler(workerService{s}, connect.WithCompressMinBytes(math.MaxInt), readLimits, connect.WithInterceptors(s.metrics.rpc))
	handle(path, withPeer(worker))
	handle(hodeiv1connect.NewEventServiceHandler(eventService{s}, opt))
	handle(hodeiv1connect.NewProviderServiceHandler(providerService{s}, opt))
	handle(hodeiv1connect.NewWebhookServiceHandler(newWebhookService(s), opt))
	handle(hodeiv1connect.NewJobTypeServiceHandler(jobTypeService{s}, opt))
	handle(hodeiv1connect.NewSecretServiceHandler(secretService{s}, opt))
	handle(hodeiv1connect.NewTokenServiceHandler(tokenService{s}, opt))
	reflector := grpcreflect.NewStaticReflector(
		hodeiv1connect.JobServiceName, hodeiv1connect.WorkerServiceName,
		hodeiv1connect.EventServiceName, hodeiv1connect.ProviderServiceName,
		hodeiv1connect.WebhookServiceName, hodeiv1connect.JobTypeServiceName,
		hodeiv1connect.SecretServiceName, hodeiv1connect.TokenServiceName,
	)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle("/metrics", s.metricsAuth(s.MetricsHandler()))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.store.Ping(r.Context()); err != nil {
			http.Error(w, "database: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	if s.cfg.UI != nil {
		ui, err := s.cfg.UI(mux)
		if err != nil { // its templates are embedded: a broken build
			s.log.Error("dashboard", "err", err)
			ui = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "dashboard: "+err.Error(), http.StatusInternalServerError)
			})
		}
		mux.Handle("/ui/", ui)
		mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	}
	return mux
}

// MetricsHandler serves the Prometheus metrics without asking for a
// token: for a separate listener (--metrics-listen) that only the
// operator's network reaches.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{})
}

// Serve serves on ln until ctx ends, then shuts down (streams are cut):
// TLS only (HTTP/2 by ALPN, or HTTP/1.1) with an authority, else
// cleartext HTTP/1.1 and h2c.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	if s.cfg.Authority != nil {
		p.SetHTTP2(true)
		ln = tls.NewListener(ln, s.cfg.Authority.ServerTLS())
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	// Failed handshakes (plaintext, refused client certificates) are
	// logged at debug level.
	hs := &http.Server{Handler: s.Handler(), Protocols: p, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	hs.Shutdown(sctx) //nolint:errcheck // streams are long-lived; Close below cuts them
	hs.Close()
	<-errc
	return nil
}

// logHub wakes log followers of a job on this replica.
type logHub struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

func newLogHub() *logHub { return &logHub{subs: map[string]map[chan struct{}]struct{}{}} }

func (h *logHub) subscribe(jobID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs[jobID] == nil {
		h.subs[jobID] = map[chan struct{}]struct{}{}
	}
	h.subs[jobID][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs[jobID], ch)
		if len(h.subs[jobID]) == 0 {
			delete(h.subs, jobID)
		}
		h.mu.Unlock()
	}
}

func (h *logHub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, subs := range h.subs {
		for ch := range subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

func (h *logHub) wake(jobID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[jobID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Lease is how long a silent worker keeps its attempts.
func (s *Server) Lease() time.Duration { return s.cfg.Lease }

// HeartbeatInterval is how often agents beat (and heartbeats are written).
func (s *Server) HeartbeatInterval() time.Duration { return s.cfg.HeartbeatInterval }
