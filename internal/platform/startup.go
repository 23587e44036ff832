package platform

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/store"
)

const (
	firstRetry = 100 * time.Millisecond
	maxRetry   = 5 * time.Second
)

// Listen listens on addr; a taken address is an error that says so.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listen on %s: %w (is another server running there? --listen picks another address)", addr, syscall.EADDRINUSE)
	}
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// listenAndOpen listens first, so that a taken address fails at once and
// the address answers (not ready) while the database is awaited, then
// opens the store. It returns the listener the server is to serve.
func listenAndOpen(ctx context.Context, log *slog.Logger, pc Config) (*store.Store, net.Listener, error) {
	ln := pc.Listener
	if ln == nil {
		var err error
		if ln, err = Listen(pc.Listen); err != nil {
			return nil, nil, err
		}
	}
	h := newHandoff(ln)
	st, err := openStore(ctx, log, h, pc)
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	return st, h.turn(true), nil
}

// openStore opens the store, waiting for the database as long as it
// refuses or fails connections: every failed attempt is logged once with
// its reason and retried with backoff (100 ms doubling up to 5 s), until
// the database answers, pc.DBWait has passed (0: no limit) or ctx ends.
// Failures that waiting cannot mend (a malformed URL, authentication, a
// missing database, a failed migration) end it at once. While it waits,
// ln answers /healthz with 200 and everything else, /readyz included,
// with 503 and the reason.
func openStore(ctx context.Context, log *slog.Logger, ln *handoff, pc Config) (*store.Store, error) {
	st, err := store.Open(ctx, store.Config{URL: pc.DatabaseURL, Logger: log})
	if err == nil || !retryable(err) || ctx.Err() != nil {
		return st, err
	}
	began := time.Now()
	var reason atomic.Value
	reason.Store(err.Error())
	stop := serveWaiting(ctx, ln.turn(false), &reason, waitingTLS(log, pc))
	defer stop()
	wait := firstRetry
	for attempt := 1; ; attempt++ {
		pause := wait
		if pc.DBWait > 0 {
			left := pc.DBWait - time.Since(began)
			if left <= 0 {
				return nil, fmt.Errorf("database not reachable after %v (%d attempts): %w", time.Since(began).Round(time.Millisecond), attempt, err)
			}
			pause = min(pause, left)
		}
		log.Warn("database not reachable, retrying", "attempt", attempt, "retry_in", pause, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		wait = min(2*wait, maxRetry)
		if st, err = store.Open(ctx, store.Config{URL: pc.DatabaseURL, Logger: log}); err == nil {
			log.Info("database reachable", "attempts", attempt+1, "waited", time.Since(began).Round(time.Millisecond))
			return st, nil
		}
		if !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
		reason.Store(err.Error())
	}
}

// retryable reports whether waiting may mend a failure to open the store:
// anything but a malformed URL and server errors outside the classes of
// connection failures (08), lack of resources (53: too many connections),
// an operator's intervention (57: starting up, shutting down) and system
// errors (58).
func retryable(err error) bool {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return false
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) && len(pg.Code) == 5 {
		switch pg.Code[:2] {
		case "08", "53", "57", "58":
			return true
		}
		return false
	}
	return true
}

// waitingTLS is the TLS of a replica waiting for its database: the
// operator's CA or server certificate, when given, serve it; a CA known
// only by its key has its certificate in the database, so the wait is
// served in cleartext (health only).
func waitingTLS(log *slog.Logger, pc Config) *tls.Config {
	if pc.TLS.InsecurePlaintext || (pc.TLS.CA == nil && pc.TLS.ServerCert == nil) {
		return nil
	}
	ca := pc.TLS.CA
	if ca == nil { // the operator's server certificate: any CA will do, none signs
		var err error
		if ca, err = pki.Ephemeral("unused"); err != nil {
			return nil
		}
	}
	a, err := pki.NewAuthority(pki.AuthorityConfig{CA: ca, Hosts: serverHosts(pc.Listen, pc.TLS.SANs), CertTTL: pc.TLS.CertTTL, ServerCert: pc.TLS.ServerCert})
	if err != nil {
		log.Warn("serving the wait for the database in cleartext", "err", err)
		return nil
	}
	return a.ServerTLS()
}

// serveWaiting serves ln while the database is awaited, over TLS with
// cfg (nil: cleartext); stop ends it.
func serveWaiting(ctx context.Context, ln net.Listener, reason *atomic.Value, cfg *tls.Config) (stop func()) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "waiting for the database: "+reason.Load().(string), http.StatusServiceUnavailable)
	})
	p := new(http.Protocols)
	p.SetHTTP1(true)
	if cfg != nil {
		p.SetHTTP2(true)
		ln = tls.NewListener(ln, cfg)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	hs := &http.Server{Handler: mux, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }() //nolint:errcheck // ends with Shutdown
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		hs.Shutdown(sctx) //nolint:errcheck // Close below cuts what is left
		hs.Close()
		<-done
	}
}

// handoff lets HTTP servers take turns on one listener: the one that
// answers while the database is awaited, then the replica's. One
// goroutine accepts and hands each connection to the current turn.
type handoff struct {
	ln    net.Listener
	conns chan net.Conn
	stop  chan struct{} // closed by the last turn's Close
	done  chan struct{} // closed when accepting has ended
	err   error         // why accepting ended; read after done
}

func newHandoff(ln net.Listener) *handoff {
	h := &handoff{ln: ln, conns: make(chan net.Conn), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				h.err = err
				return
			}
			select {
			case h.conns <- c:
			case <-h.stop:
				c.Close()
				h.err = net.ErrClosed
				return
			}
		}
	}()
	return h
}

// turn returns a listener taking the connections until it is closed;
// closing the last turn closes the listener.
func (h *handoff) turn(last bool) net.Listener {
	return &turn{h: h, last: last, closed: make(chan struct{})}
}

type turn struct {
	h      *handoff
	last   bool
	once   sync.Once
	closed chan struct{}
}

func (t *turn) Accept() (net.Conn, error) {
	select {
	case c := <-t.h.conns:
		return c, nil
	case <-t.closed:
		return nil, net.ErrClosed
	case <-t.h.done:
		return nil, t.h.err
	}
}

func (t *turn) Close() error {
	var err error
	t.once.Do(func() {
		close(t.closed)
		if t.last {
			close(t.h.stop)
			err = t.h.ln.Close()
		}
	})
	return err
}

func (t *turn) Addr() net.Addr { return t.h.ln.Addr() }
