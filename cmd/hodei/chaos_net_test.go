//go:build chaos

package main

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// cutProxy is a TCP proxy between agents and a server that the test can
// cut: drop closes every connection and refuses new ones; blackhole keeps
// them open but forwards nothing (a partition without resets). Healing a
// blackhole closes the connections it held, as their peers' timeouts
// would.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	mode   string // "pass", "drop" or "blackhole"
	conns  map[net.Conn]struct{}
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, mode: "pass", conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.set("drop") })
	go p.serve()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode := p.mode
		if mode != "drop" {
			p.conns[c] = struct{}{}
		}
		p.mu.Unlock()
		switch mode {
		case "drop":
			c.Close()
		case "pass":
			go p.pipe(c)
		} // blackhole: held, never forwarded
	}
}

// pipe forwards c to the target both ways until either side closes.
func (p *cutProxy) pipe(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		p.close(c)
		return
	}
	p.mu.Lock()
	p.conns[s] = struct{}{}
	p.mu.Unlock()
	go p.copy(s, c)
	p.copy(c, s)
}

// copy forwards src to dst, discarding what arrives during a blackhole,
// and closes both when src ends.
func (p *cutProxy) copy(dst, src net.Conn) {
	defer p.close(dst)
	defer p.close(src)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		hole := p.mode == "blackhole"
		p.mu.Unlock()
		if n > 0 && !hole {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) close(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// set switches the proxy's mode; drop, and leaving a blackhole, close
// every connection.
func (p *cutProxy) set(mode string) {
	p.mu.Lock()
	was := p.mode
	p.mode = mode
	var cs []net.Conn
	if mode == "drop" || was == "blackhole" {
		for c := range p.conns {
			cs = append(cs, c)
		}
	}
	p.mu.Unlock()
	for _, c := range cs {
		p.close(c)
	}
}

// TestChaosNetworkDropShorterThanLease: the connection of an agent running
// four jobs is cut (reset, refused) for less than the lease. The agent
// reconnects and reconciles: each job keeps its one attempt and succeeds.
func TestChaosNetworkDropShorterThanLease(t *testing.T) {
	const lease = 6 * time.Second
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", lease.String())
	st := openStore(t, dbURL)
	px := startCutProxy(t, p.addr)
	a := spawnAgent(t, st, []string{px.addr()}, "--slots", "4", "--grace", "1s")
	c := jobClient(p.addr)
	l := newLedger(t, "net_drop")
	for i := range 4 {
		l.submit(t, c, i, l.spec(5*time.Second, 3))
	}
	for _, id := range l.ids {
		l.waitStarted(t, id, 30*time.Second)
	}
	px.set("drop")
	// The cut lasts until the agent has seen its stream go and failed to
	// reconnect once through the proxy, well within the lease.
	eventually(t, lease/2, "the agent's stream cut and a reconnect refused", func() bool {
		return strings.Count(a.logs.String(), "stream to server lost") >= 2
	})
	px.set("pass")
	healed := time.Now()
	eventually(t, 10*time.Second, "the agent reconnected", func() bool {
		return strings.Count(a.logs.String(), "msg=connected") >= 2
	})
	recovered := time.Since(healed)
	l.check(t, st, 30*time.Second, time.Second, recovered)
	if n := queryOne[int64](t, st, "SELECT count(*) FROM attempts WHERE job_id = ANY($1::uuid[])", l.ids); n != 4 {
		t.Errorf("%d attempts for 4 jobs, want one each (reconciled, not retried)", n)
	}
}

// TestChaosNetworkBlackholePastLease: the connection of an agent running
// two long jobs is blackholed past the lease. The server retries them on
// another agent; the cut-off agent fences itself (kills its jobs) before
// the retries start.
func TestChaosNetworkBlackholePastLease(t *testing.T) {
	const lease = 6 * time.Second
	dbURL := storetest.URL(t)
	p := startServerOn(t, dbURL, freeAddr(t), "--max-workers", "0", "--lease", lease.String())
	st := openStore(t, dbURL)
	px := startCutProxy(t, p.addr)
	spawnAgent(t, st, []string{px.addr()}, "--slots", "2", "--grace", "1s")
	c := jobClient(p.addr)
	l := newLedger(t, "net_blackhole")
	for i := range 2 {
		l.submit(t, c, i, l.spec(12*time.Second, 3))
	}
	for _, id := range l.ids {
		l.waitStarted(t, id, 30*time.Second)
	}
	spawnAgent(t, st, []string{p.addr}, "--slots", "2", "--grace", "1s")
	px.set("blackhole")
	cutAt := time.Now()
	retried := l.waitRetried(t, 4*lease)
	px.set("pass")
	l.check(t, st, 60*time.Second, 2*time.Second, retried.Sub(cutAt))
}
