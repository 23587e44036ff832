// Package providertest is the conformance suite every provider passes,
// against a real server: Run provisions real agents, waits for them to
// enroll and connect, and checks Inspect, Terminate and List (installation
// separation and orphan reconciliation) from the outside.
//
// It also holds the Platform the suite runs on (a server replica on a
// loopback listener with its store and event bus).
//
// Tests that call Run or StartPlatform need a TestMain that calls
// storetest.Main.
package providertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/store/storetest"
	"github.com/hodei-dev/hodei/internal/testbin"
)

// Harness describes a provider to the suite.
type Harness struct {
	// New returns a provider instance whose agents dial server. install
	// names an installation: instances built with the same install are
	// the same provider across a server restart (they see each other's
	// workers, if the provider's workers can outlive it); instances with
	// different installs never see each other's workers. New registers
	// the instance's cleanup.
	New func(t *testing.T, server, install string) provider.Provider
	// Spec is the spec of the workers the suite starts.
	Spec provider.Spec
	// NoOrphans, when set, says why workers cannot outlive the provider
	// instance that started them; the orphan test is then skipped.
	NoOrphans string
	// ConnectTimeout bounds an agent's start until it is connected, and
	// its drain after Terminate (default 30s).
	ConnectTimeout time.Duration
}

// Run runs the conformance suite; the subtests run in parallel, each on
// its own platform (and database).
func Run(t *testing.T, h Harness) {
	if h.ConnectTimeout <= 0 {
		h.ConnectTimeout = 30 * time.Second
	}
	for _, c := range []struct {
		name string
		test func(*testing.T, Harness)
	}{
		{"Health", testHealth},
		{"ProvisionConnectsAndTerminateRemoves", testProvisionConnectsAndTerminateRemoves},
		{"TerminateIsIdempotent", testTerminateIsIdempotent},
		{"TerminateIsGraceful", testTerminateIsGraceful},
		{"ListSeparatesInstallations", testListSeparatesInstallations},
		{"OrphansAreListedAndTerminated", testOrphansAreListedAndTerminated},
	} {
		t.Run(c.name, func(t *testing.T) { c.test(t, h) })
	}
}

func testHealth(t *testing.T, h Harness) {
	t.Parallel()
	e := newEnv(t, h)
	if err := e.provider(NewInstall()).Health(context.Background()); err != nil {
		t.Fatalf("Health: %v", err)
	}
}

func testProvisionConnectsAndTerminateRemoves(t *testing.T, h Harness) {
	t.Parallel()
	e := newEnv(t, h)
	p := e.provider(NewInstall())
	id, hd := e.provision(p)
	e.waitConnected(id)
	if w, err := e.plat.Store.GetWorker(context.Background(), id); err != nil || w.State != "connected" {
		t.Fatalf("worker %s: state %q (err %v), want connected", id, w.State, err)
	}
	e.mustRun(p, hd, true)
	if got := e.list(p); !got[id] {
		t.Fatalf("List = %v, want it to have %s", got, id)
	}
	if err := p.Terminate(context.Background(), hd); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	e.mustRun(p, hd, false)
	if got := e.list(p); got[id] {
		t.Fatalf("List after Terminate = %v, still has %s", got, id)
	}
	e.waitDisconnected(id)
}

func testTerminateIsIdempotent(t *testing.T, h Harness) {
	t.Parallel()
	e := newEnv(t, h)
	p := e.provider(NewInstall())
	id, hd := e.provision(p)
	e.waitConnected(id)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { errs[i] = p.Terminate(context.Background(), hd) })
	}
	wg.Wait()
	errs = append(errs, p.Terminate(context.Background(), hd))
	for i, err := range errs {
		if err != nil {
			t.Errorf("Terminate #%d: %v", i+1, err)
		}
	}
	e.mustRun(p, hd, false)
	e.waitDisconnected(id)
}

func testTerminateIsGraceful(t *testing.T, h Harness) {
	t.Parallel()
	e := newEnv(t, h)
	p := e.provider(NewInstall())
	id, hd := e.provision(p)
	e.waitConnected(id)
	if err := p.Terminate(context.Background(), hd); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	e.waitGoodbye(id)
}

func testListSeparatesInstallations(t *testing.T, h Harness) {
	t.Parallel()
	e := newEnv(t, h)
	a, b := e.provider(NewInstall()), e.provider(NewInstall())
	var wg sync.WaitGroup
	ids := make([]string, 3)
	for i, p := range []provider.Provider{a, a, b} {
		wg.Go(func() { ids[i], _ = e.provision(p) })
	}
	wg.Wait()
	for _, id := range ids {
		if id == "" {
			t.FailNow() // provision reported the error
		}
		e.waitConnected(id)
	}
	if got, want := e.list(a), map[string]bool{ids[0]: true, ids[1]: true}; !sameSet(got, want) {
		t.Errorf("List of installation a = %v, want %v", got, want)
	}
	if got, want := e.list(b), map[string]bool{ids[2]: true}; !sameSet(got, want) {
		t.Errorf("List of installation b = %v, want %v", got, want)
	}
}

func testOrphansAreListedAndTerminated(t *testing.T, h Harness) {
	if h.NoOrphans != "" {
		t.Skip(h.NoOrphans)
	}
	t.Parallel()
	e := newEnv(t, h)
	install := NewInstall()
	old := e.provider(install)
	id, _ := e.provision(old) // the handle is forgotten, as by a server that died
	e.waitConnected(id)

	p := e.provider(install) // the next server run
	var orphan []byte
	for _, in := range e.listInstances(p) {
		if in.WorkerID == id {
			orphan = in.Handle
		}
	}
	if orphan == nil {
		t.Fatalf("List of a new instance lacks the orphan %s", id)
	}
	e.mustRun(p, orphan, true)
	if err := p.Terminate(context.Background(), orphan); err != nil {
		t.Fatalf("Terminate orphan: %v", err)
	}
	e.mustRun(p, orphan, false)
	if got := e.list(p); got[id] {
		t.Fatalf("List after Terminate = %v, still has %s", got, id)
	}
	e.waitDisconnected(id)
}

// NewInstall returns a fresh installation name.
func NewInstall() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

type env struct {
	t    *testing.T
	h    Harness
	plat *Platform
}

func newEnv(t *testing.T, h Harness) *env {
	return &env{t: t, h: h, plat: StartPlatform(t)}
}

func (e *env) provider(install string) provider.Provider {
	e.t.Helper()
	return e.h.New(e.t, e.plat.Addr, install)
}

// provision registers and starts a worker of p, terminated when the
// test ends.
func (e *env) provision(p provider.Provider) (id string, h []byte) {
	e.t.Helper()
	id, h, err := Provision(context.Background(), e.plat, p, e.h.Spec)
	if err != nil {
		e.t.Error(err)
		return "", nil
	}
	e.t.Cleanup(func() {
		if err := p.Terminate(context.Background(), h); err != nil {
			e.t.Errorf("cleanup: terminate %s: %v", id, err)
		}
	})
	return id, h
}

// Provision registers a worker of p on plat and starts it.
func Provision(ctx context.Context, plat *Platform, p provider.Provider, spec provider.Spec) (id string, h []byte, err error) {
	id, token, err := plat.NewWorker(ctx, p.Name(), spec.Image)
	if err != nil {
		return "", nil, err
	}
	h, err = p.Provision(ctx, id, token, spec)
	if err != nil {
		return "", nil, fmt.Errorf("provision %s: %w", id, err)
	}
	if len(h) == 0 {
		return "", nil, fmt.Errorf("provision %s: empty handle", id)
	}
	return id, h, nil
}

func (e *env) waitConnected(id string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.h.ConnectTimeout)
	defer cancel()
	if err := e.plat.WaitConnected(ctx, id); err != nil {
		e.t.Fatal(err)
	}
}

// waitDisconnected waits for the worker's stream to end.
func (e *env) waitDisconnected(id string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.h.ConnectTimeout)
	defer cancel()
	if err := e.plat.WaitDisconnected(ctx, id); err != nil {
		e.t.Fatal(err)
	}
}

// waitGoodbye waits until the worker's row says terminated: the agent got
// a signal it could drain on (SIGTERM, not SIGKILL) and said goodbye.
func (e *env) waitGoodbye(id string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.h.ConnectTimeout)
	defer cancel()
	var state string
	var events []string
	for ctx.Err() == nil {
		w, err := e.plat.Store.GetWorker(ctx, id)
		if err == nil && w.State == "terminated" {
			return
		}
		if err == nil {
			state = w.State
		}
		if evs, err := e.plat.WorkerEvents(ctx, id); err == nil {
			events = evs
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("worker %s: state %q, events %v after Terminate; want terminated (a graceful shutdown)", id, state, events)
}

func (e *env) mustRun(p provider.Provider, h []byte, want bool) {
	e.t.Helper()
	running, err := p.Inspect(context.Background(), h)
	if err != nil || running != want {
		e.t.Fatalf("Inspect = %v, %v; want %v, nil", running, err, want)
	}
}

func (e *env) listInstances(p provider.Provider) []provider.Instance {
	e.t.Helper()
	ins, err := p.List(context.Background())
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	return ins
}

// list returns the worker ids p lists.
func (e *env) list(p provider.Provider) map[string]bool {
	e.t.Helper()
	out := map[string]bool{}
	for _, in := range e.listInstances(p) {
		if in.WorkerID == "" || len(in.Handle) == 0 {
			e.t.Errorf("List returned %+v: want a worker id and a handle", in)
		}
		out[in.WorkerID] = true
	}
	return out
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// StartPlatform starts a platform on a fresh database, stopped when the
// test ends. Its logs go to t.Log until then and are dropped after.
func StartPlatform(t *testing.T) *Platform {
	t.Helper()
	log := slog.New(slog.NewTextHandler(Writer(t, ""), &slog.HandlerOptions{Level: slog.LevelDebug}))
	plat, err := NewPlatform(context.Background(), PlatformConfig{DatabaseURL: storetest.URL(t), Logger: log, CA: testbin.CA()})
	if err != nil {
		t.Fatalf("platform: %v", err)
	}
	t.Cleanup(func() {
		if err := plat.Close(); err != nil {
			t.Errorf("platform: %v", err)
		}
	})
	return plat
}

// Writer returns a writer to t.Log, one call per line with prefix, that
// drops what is written once the test's cleanups have run (timers and
// child processes may outlive a test, and t.Log then panics).
func Writer(t *testing.T, prefix string) *LogWriter {
	w := &LogWriter{t: t, prefix: prefix}
	t.Cleanup(w.close) // registered first, so it runs after the later cleanups
	return w
}

// LogWriter is the writer of Writer.
type LogWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    []byte
	done   bool
}

func (w *LogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.t.Log(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *LogWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
