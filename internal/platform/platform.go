// Package platform assembles one server replica: the store, the event
// bus, the RPC server, the scheduler, the autoscaler and the providers it
// runs. The hodei binary runs it for `server` and `dev`; benchmarks and
// tests run it in their own process.
package platform

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/hodei-dev/hodei/internal/autoscale"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/provider/docker"
	"github.com/hodei-dev/hodei/internal/provider/process"
	"github.com/hodei-dev/hodei/internal/scheduler"
	"github.com/hodei-dev/hodei/internal/secret"
	"github.com/hodei-dev/hodei/internal/server"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/tracing"
	"github.com/hodei-dev/hodei/internal/web"
	"github.com/hodei-dev/hodei/internal/webhook"
)

// NewLogger is the platform's logger: text lines on w, JSON lines with
// HODEI_LOG_FORMAT=json; at debug level with HODEI_LOG_LEVEL=debug, else
// info. Lines about a job carry job_id, and attempt and worker_id where
// they apply, so that one job's story can be grepped.
func NewLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("HODEI_LOG_LEVEL") == "debug" {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if os.Getenv("HODEI_LOG_FORMAT") == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Config configures a replica: what server and dev share.
type Config struct {
	Listen string
	// Listener, when set, is served instead of listening on Listen.
	Listener    net.Listener
	DatabaseURL string
	// DBWait bounds how long Run waits at start for a database that
	// refuses connections; 0 waits until ctx ends.
	DBWait      time.Duration
	MaxWorkers  int
	AgentLog    io.Writer
	AgentBinary string        // default: this executable
	Lease       time.Duration // default: the server's
	// EventRetention is how long delivered events are kept; default 7 days.
	EventRetention time.Duration
	// JobRetention is how long finished jobs (with their attempts and
	// logs) are kept; default 30 days.
	JobRetention time.Duration
	Ready        func(addr string) // called once the server listens
	// Serving, when set, is called before Ready with the trust bundle
	// clients need (PEM; nil when plaintext).
	Serving func(addr string, bundle []byte)
	// IdleTimeout and WorkerLabels configure the process provider's
	// workers (defaults 60s, none); HealthInterval the health monitor.
	IdleTimeout    time.Duration
	WorkerLabels   map[string]string
	HealthInterval time.Duration
	// Docker configures the Docker provider; off when its MaxWorkers is 0.
	Docker DockerConfig
	// Kubernetes configures the Kubernetes provider; off when its
	// MaxWorkers is 0.
	Kubernetes KubernetesConfig
	// JobTypeDefaults, when set, is a file of job type retry defaults
	// (server.ParseJobTypes) stored at start over those of the same names.
	JobTypeDefaults string
	// SecretKeyFile is the file of the key-encryption keys of stored
	// secrets (outside the database); empty turns secrets off. With
	// CreateSecretKey a missing file is created with a new key (dev).
	SecretKeyFile   string
	CreateSecretKey bool
	// StopAllWorkers terminates every provider's workers on exit (dev mode,
	// whose database goes with it). A server leaves Docker and Kubernetes
	// workers running so that they reconnect when it is back.
	StopAllWorkers bool
	// TLS is the certificate source; Run refuses to start without one
	// unless TLS.InsecurePlaintext.
	TLS TLSConfig
	// UILogins holds the one-time sign-in links of the dashboard under
	// /ui/ (nil: none; API tokens sign in either way).
	UILogins *web.Logins
	// OTLPEndpoint, when set, is the OTLP/HTTP URL the server exports one
	// trace per job attempt to; the agents it starts get it too.
	OTLPEndpoint string
	// MetricsListen, when set, is an address that serves /metrics without
	// a token (for a network only the operator reaches); the API port
	// serves it to tokens with the metrics scope either way.
	MetricsListen string
	// Prepare, when set, runs once the store is open and migrated, before
	// the server serves: dev mode creates its admin token there.
	Prepare func(ctx context.Context, st *store.Store) error
}

// setDefaults sets the defaults of the fields left zero.
func (pc *Config) setDefaults() {
	if pc.JobRetention <= 0 {
		pc.JobRetention = 30 * 24 * time.Hour
	}
	if pc.EventRetention <= 0 {
		pc.EventRetention = 7 * 24 * time.Hour
	}
	if pc.IdleTimeout <= 0 {
		pc.IdleTimeout = time.Minute
	}
}

// loadJobTypes stores the job types of the file at path, when set, over
// the stored ones of the same names.
func loadJobTypes(ctx context.Context, log *slog.Logger, st *store.Store, path string) error {
	if path == "" {
		return nil
	}
	n, err := server.LoadJobTypes(ctx, st, path)
	if err != nil {
		return err
	}
	log.Info("job type defaults loaded", "file", path, "job_types", n)
	return nil
}

// newServer builds the replica's RPC server, with the key file of stored
// secrets when one is configured (without one, secrets are off).
func newServer(pc Config, replica string, log *slog.Logger, reg *prometheus.Registry, tracer *tracing.Tracer, st *store.Store, bus *eventbus.Bus, auth *pki.Authority) (*server.Server, error) {
	var keys *secret.Keyring
	if pc.SecretKeyFile != "" {
		var err error
		if keys, err = secret.LoadKeyring(pc.SecretKeyFile, pc.CreateSecretKey); err != nil {
			return nil, err
		}
	}
	cfg := server.Config{ReplicaID: replica, Logger: log, Registry: reg, Lease: pc.Lease, SecretKeys: keys, Authority: auth, Tracer: tracer,
		CertCheckInterval: pc.TLS.CheckInterval, RenewBefore: pc.TLS.RenewBefore, BadRenewals: pc.TLS.BadRenewals}
	var srv *server.Server
	cfg.UI = func(api http.Handler) (http.Handler, error) { // called once srv is set
		return web.New(web.Config{API: api, Auth: uiAuth{links: pc.UILogins, srv: srv}, Logger: log})
	}
	srv, err := server.New(cfg, st, bus)
	return srv, err
}

// uiAuth signs browsers in to the dashboard with a one-time link or an
// API token (whose scopes say what the session may do).
type uiAuth struct {
	links *web.Logins
	srv   *server.Server
}

func (a uiAuth) Login(ctx context.Context, secret string) (web.Principal, error) {
	if a.links != nil {
		if p, err := a.links.Login(ctx, secret); err == nil {
			return p, nil
		}
	}
	name, write, admin, err := a.srv.TokenUser(ctx, secret)
	if err != nil {
		return web.Principal{}, web.ErrBadLogin
	}
	return web.Principal{Name: name, Write: write, Admin: admin, Token: secret}, nil
}

// DockerConfig configures the Docker provider.
type DockerConfig struct {
	MaxWorkers int
	Image      string // default image of workers whose job names none
	Host       string // engine address; default from DOCKER_HOST, else the local socket
	Binary     string // static hodei binary mounted into containers; default this executable
	Labels     map[string]string
}

// Run runs one server replica with the process provider until ctx
// ends. Shutdown order: stop accepting (listener), stop dispatch, stop
// workers we started, close the store.
func Run(ctx context.Context, log *slog.Logger, pc Config) error {
	pc.setDefaults()
	if err := checkTLS(pc.TLS); err != nil {
		return err
	}
	st, ln, err := listenAndOpen(ctx, log, pc)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer st.Close()
	defer ln.Close()
	addr := ln.Addr().String()
	metrics, err := prepare(ctx, log, st, pc)
	if err != nil {
		return err
	}
	defer metrics.close()
	reg, tracer, agentArgs, err := observability(ctx, pc)
	if err != nil {
		return err
	}
	defer tracer.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // best effort at exit
	bus := st.NewBus(eventbus.Config{Logger: log, Metrics: eventbus.NewMetrics(reg)})
	auth, err := authority(ctx, log, st, pc.TLS, addr)
	if err != nil {
		return err
	}
	replica := "replica-" + randomHex(6)
	srv, err := newServer(pc, replica, log, reg, tracer, st, bus, auth)
	if err != nil {
		return err
	}
	providers, local, closeProviders, err := newProviders(ctx, log, st, addr, auth, pc, agentArgs)
	if err != nil {
		return err
	}
	defer closeProviders()
	smetrics := scheduler.NewMetrics(reg)
	disp := scheduler.New(scheduler.Config{Logger: log, Metrics: smetrics, Tracer: tracer}, st, bus, srv.Workers())
	srv.Workers().OnCreated(disp.JobsCreated)
	scaler := autoscale.New(autoscale.Config{Logger: log, Registry: reg, HealthInterval: pc.HealthInterval}, st, bus, providers)

	leaders := []*scheduler.Leader{housekeeping(pc, log, st, bus, srv, disp, smetrics, reg)}
	if len(providers) > 0 {
		// Only replicas with providers campaign for scaling. Replicas that
		// run providers should configure the same ones.
		leaders = append(leaders, &scheduler.Leader{Store: st, Key: scheduler.ScalingLock, Name: "scaling", Logger: log,
			Duties: []scheduler.Duty{scaler.Run, scaler.Health}})
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return bus.Run(gctx) })
	for _, l := range leaders {
		g.Go(func() error { return l.Run(gctx) })
	}
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return srv.RunCerts(gctx) })
	g.Go(func() error { return disp.Run(gctx) })
	g.Go(func() error { return srv.Serve(gctx, ln) })
	g.Go(func() error { return metrics.serve(gctx, log, srv.MetricsHandler()) })
	log.Info("hodei server listening", "addr", addr, "replica_id", replica)
	if pc.Serving != nil {
		var bundle []byte
		if auth != nil {
			bundle = auth.Bundle()
		}
		pc.Serving(addr, bundle)
	}
	if pc.Ready != nil {
		pc.Ready(addr)
	}
	<-gctx.Done()
	tctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	if local != nil { // the agents this server started go with it
		local.TerminateAll(tctx)
	}
	if pc.StopAllWorkers {
		stopWorkers(tctx, log, providers)
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// observability returns the replica's metrics registry (with Go and
// process metrics), its tracer (nil without an OTLP endpoint), and the
// arguments of the agents its providers start, which trace when it does.
func observability(ctx context.Context, pc Config) (*prometheus.Registry, *tracing.Tracer, []string, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tracer, err := tracing.New(ctx, pc.OTLPEndpoint, "hodei-server")
	if err != nil {
		return nil, nil, nil, err
	}
	// Agents drain for 5 s and are killed after 20 s when the server stops.
	agentArgs := []string{"--drain-timeout", "5s", "--grace", "5s"}
	if pc.OTLPEndpoint != "" {
		agentArgs = append(agentArgs, "--otlp-endpoint", pc.OTLPEndpoint)
	}
	return reg, tracer, agentArgs, nil
}

// prepare loads the job types of the file pc names, runs pc.Prepare and
// listens on pc.MetricsListen, when set.
func prepare(ctx context.Context, log *slog.Logger, st *store.Store, pc Config) (*metricsListener, error) {
	if err := loadJobTypes(ctx, log, st, pc.JobTypeDefaults); err != nil {
		return nil, err
	}
	if pc.Prepare != nil {
		if err := pc.Prepare(ctx, st); err != nil {
			return nil, err
		}
	}
	if pc.MetricsListen == "" {
		return &metricsListener{}, nil
	}
	ln, err := Listen(pc.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	return &metricsListener{ln: ln}, nil
}

// metricsListener is the --metrics-listen listener; without one, serve
// and close do nothing.
type metricsListener struct{ ln net.Listener }

func (m *metricsListener) close() {
	if m.ln != nil {
		m.ln.Close()
	}
}

// serve serves /metrics (h) without a token until ctx ends.
func (m *metricsListener) serve(ctx context.Context, log *slog.Logger, h http.Handler) error {
	if m.ln == nil {
		return nil
	}
	ln := m.ln
	log.Info("metrics served without a token", "addr", ln.Addr().String())
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	hs.Close()
	<-errc
	return nil
}

// newProviders builds and registers the providers pc configures; local
// is the process provider, if any. With --max-workers 0 this server
// starts no local workers: agents are started elsewhere (another host, a
// test) and connect on their own.
func newProviders(ctx context.Context, log *slog.Logger, st *store.Store, addr string, auth *pki.Authority, pc Config, agentArgs []string) (_ []provider.Provider, local *process.Provider, closeAll func(), err error) {
	var providers []provider.Provider
	// Agents trust the CA bundle they are given (HODEI_CA).
	var agentEnv []string
	if auth != nil {
		agentEnv = []string{"HODEI_CA=" + string(auth.Bundle())}
	}
	var closers []func() error
	// Not closeAll itself: a failed return sets it to nil before the
	// deferred call runs.
	closeProviders := func() {
		for _, c := range closers {
			c() //nolint:errcheck // shutting down
		}
	}
	defer func() {
		if err != nil {
			closeProviders()
		}
	}()
	if pc.MaxWorkers > 0 {
		local, err = process.New(process.Config{Server: addr, Stderr: pc.AgentLog, Grace: 20 * time.Second, Binary: pc.AgentBinary, Env: agentEnv,
			Args: agentArgs})
		if err != nil {
			return nil, nil, nil, err
		}
		if err := st.SeedProvider(ctx, store.Provider{Name: local.Name(), Kind: local.Kind(), MaxWorkers: pc.MaxWorkers,
			IdleTimeout: pc.IdleTimeout, Labels: pc.WorkerLabels}); err != nil {
			return nil, nil, nil, err
		}
		providers = append(providers, local)
	}
	if pc.Docker.MaxWorkers > 0 {
		d, err := newDockerProvider(ctx, log, st, addr, agentEnv, pc, agentArgs)
		if err != nil {
			return nil, nil, nil, err
		}
		closers = append(closers, d.Close)
		providers = append(providers, d)
	}
	if pc.Kubernetes.MaxWorkers > 0 {
		k, err := newKubernetesProvider(ctx, log, st, addr, agentEnv, pc, agentArgs)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("kubernetes provider: %w", err)
		}
		providers = append(providers, k)
	}
	return providers, local, closeProviders, nil
}

// stopWorkers terminates every worker of the providers.
func stopWorkers(ctx context.Context, log *slog.Logger, providers []provider.Provider) {
	for _, p := range providers {
		insts, err := p.List(ctx)
		if err != nil {
			log.Warn("stop workers", "provider", p.Name(), "err", err)
			continue
		}
		for _, in := range insts {
			if err := p.Terminate(ctx, in.Handle); err != nil {
				log.Warn("stop worker", "provider", p.Name(), "worker_id", in.WorkerID, "err", err)
			}
		}
	}
}

// newDockerProvider builds the Docker provider and registers it.
func newDockerProvider(ctx context.Context, log *slog.Logger, st *store.Store, addr string, env []string, pc Config, agentArgs []string) (*docker.Provider, error) {
	install, err := st.InstallationID(ctx)
	if err != nil {
		return nil, err
	}
	bin := pc.Docker.Binary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	d, err := docker.New(docker.Config{Host: pc.Docker.Host, Binary: bin, Server: addr, Env: env, DefaultImage: pc.Docker.Image, InstallID: install, Logger: log,
		Grace: 20 * time.Second, Args: agentArgs})
	if err != nil {
		return nil, fmt.Errorf("docker provider: %w", err)
	}
	if err := st.SeedProvider(ctx, store.Provider{Name: d.Name(), Kind: d.Kind(), MaxWorkers: pc.Docker.MaxWorkers,
		IdleTimeout: pc.IdleTimeout, Labels: pc.Docker.Labels, AnyImage: true}); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// housekeeping is the leadership of the singleton duties every replica
// campaigns for.
func housekeeping(pc Config, log *slog.Logger, st *store.Store, bus *eventbus.Bus, srv *server.Server, disp *scheduler.Dispatcher,
	smetrics *scheduler.Metrics, reg *prometheus.Registry) *scheduler.Leader {
	return &scheduler.Leader{Store: st, Key: scheduler.HousekeepingLock, Name: "housekeeping", Logger: log, Duties: []scheduler.Duty{
		// last_seen lags up to two heartbeat intervals (beat, then the
		// coalesced write): the reaper allows for that on top of the lease.
		scheduler.Reaper(st, srv.Lease()+2*srv.HeartbeatInterval(), srv.Lease()/2, log, disp.Kick),
		func(ctx context.Context) error { return bus.RunRetention(ctx, time.Minute, pc.EventRetention) },
		scheduler.JobRetention(st, time.Minute, pc.JobRetention, log),
		scheduler.QueueDepth(st, bus, smetrics, 500*time.Millisecond, log),
		webhook.New(webhook.Config{Logger: log, Metrics: webhook.NewMetrics(reg)}, st, bus).Run,
	}}
}
