package providertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/server"
	"github.com/hodei-dev/hodei/internal/store"
)

// PlatformConfig configures NewPlatform.
type PlatformConfig struct {
	DatabaseURL string // required; migrated on open
	Logger      *slog.Logger
	// CA signs the server's and the agents' certificates; required: the
	// platform serves TLS only. Agents must trust it (HODEI_CA_FILE or
	// HODEI_CA).
	CA *pki.CA
}

// Platform is a real server replica (store, event bus, RPC server on a
// loopback listener) without scheduler or provider: the other side of a
// provider's agents. It registers workers, hands out their bootstrap
// tokens and tells when they connect.
type Platform struct {
	// Addr is the address agents dial (127.0.0.1:PORT).
	Addr  string
	Store *store.Store

	srv    *server.Server
	cancel context.CancelFunc
	g      *errgroup.Group

	mu   sync.Mutex
	wake chan struct{} // closed and replaced whenever a worker connects
}

// NewPlatform starts a platform; Close stops it.
func NewPlatform(ctx context.Context, cfg PlatformConfig) (*Platform, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := store.Open(ctx, store.Config{URL: cfg.DatabaseURL, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	bus := st.NewBus(eventbus.Config{Logger: cfg.Logger})
	b := make([]byte, 4)
	rand.Read(b)
	if cfg.CA == nil {
		st.Close()
		return nil, errors.New("providertest: a CA is required")
	}
	auth, err := pki.NewAuthority(pki.AuthorityConfig{CA: cfg.CA, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		st.Close()
		return nil, err
	}
	srv, err := server.New(server.Config{ReplicaID: "providertest-" + hex.EncodeToString(b), Logger: cfg.Logger, Registry: prometheus.NewRegistry(),
		Authority: auth}, st, bus)
	if err != nil {
		st.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	p := &Platform{Addr: ln.Addr().String(), Store: st, srv: srv, wake: make(chan struct{})}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g, gctx := errgroup.WithContext(rctx)
	// Capacity receives after a worker's stream is registered, which is
	// after its WorkerRegistered event committed.
	g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-srv.Workers().Capacity():
				p.kick()
			}
		}
	})
	g.Go(func() error { return bus.Run(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return srv.Serve(gctx, ln) })
	p.cancel, p.g = cancel, g
	return p, nil
}

func (p *Platform) kick() {
	p.mu.Lock()
	close(p.wake)
	p.wake = make(chan struct{})
	p.mu.Unlock()
}

// Close stops the server (cutting agents' streams) and closes the store.
func (p *Platform) Close() error {
	p.cancel()
	err := p.g.Wait()
	p.Store.Close()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// NewWorker registers a worker that provider is about to start and
// returns its id and bootstrap token (valid for a minute).
func (p *Platform) NewWorker(ctx context.Context, provider, image string) (id, token string, err error) {
	return p.Store.NewWorker(ctx, provider, image, nil, time.Minute)
}

// Connected reports whether the worker has a stream to this platform.
func (p *Platform) Connected(id string) bool { return p.srv.Workers().Connected(id) }

// WaitConnected waits until the worker has enrolled and its stream is
// open (its WorkerRegistered event committed), or ctx ends.
func (p *Platform) WaitConnected(ctx context.Context, id string) error {
	for {
		p.mu.Lock()
		wake := p.wake
		p.mu.Unlock()
		if p.Connected(id) {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("worker %s not connected: %w", id, ctx.Err())
		}
	}
}

// WaitDisconnected waits until the worker has no stream to this platform,
// or ctx ends.
func (p *Platform) WaitDisconnected(ctx context.Context, id string) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for p.Connected(id) {
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("worker %s still connected: %w", id, ctx.Err())
		}
	}
	return nil
}

// WorkerEvents returns the types of the events of a worker, oldest first.
func (p *Platform) WorkerEvents(ctx context.Context, id string) ([]string, error) {
	rows, err := p.Store.SQLForTests().Query(ctx, "SELECT type FROM events WHERE aggregate_kind = 'worker' AND aggregate_id = $1 ORDER BY id", id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
