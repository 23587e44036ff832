package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultConnectTimeout bounds how long a command waits for a server to
// answer: to accept the connection and send its first bytes (HTTP/2
// settings, sent at once by a live server). Streams are not bounded by it.
const DefaultConnectTimeout = 10 * time.Second

// noAnswerError is a server that did not answer in time. never says that
// no connection of the command to it ever had an answer: following
// streams then give up at once instead of reconnecting.
type noAnswerError struct {
	addr    string
	timeout time.Duration
	never   bool
}

func (e *noAnswerError) Error() string {
	return fmt.Sprintf("server %s did not answer within %s", e.addr, e.timeout)
}

// Timeout makes the error a net.Error timeout, as the deadline it replaces.
func (e *noAnswerError) Timeout() bool   { return true }
func (e *noAnswerError) Temporary() bool { return false }

// connectTimeoutFlag registers --connect-timeout, its default from
// HODEI_CONNECT_TIMEOUT. A bad environment value is reported by parse.
func (e *env) connectTimeoutFlag(fs *flag.FlagSet) {
	e.connectTimeout = DefaultConnectTimeout
	fs.Var((*positiveDuration)(&e.connectTimeout), "connect-timeout",
		"how long the server may take to accept the connection and answer (env HODEI_CONNECT_TIMEOUT)")
	if v := e.Env("HODEI_CONNECT_TIMEOUT"); v != "" {
		if err := fs.Set("connect-timeout", v); err != nil {
			e.envErr = fmt.Errorf("HODEI_CONNECT_TIMEOUT=%q: %w", v, err)
		}
	}
}

// positiveDuration is a Go duration above zero.
type positiveDuration time.Duration

func (d *positiveDuration) String() string {
	if d == nil {
		return ""
	}
	return time.Duration(*d).String()
}

func (d *positiveDuration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return errors.New("want a positive duration like 10s or 1m")
	}
	*d = positiveDuration(v)
	return nil
}

// dialer connects to addr within timeout and returns connections that
// fail with a noAnswerError when the server sends nothing within timeout
// of the connection: a server that accepts but never answers.
func dialer(addr string, timeout time.Duration) func(ctx context.Context, network, address string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	answered := new(atomic.Bool)
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, address)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			return nil, &noAnswerError{addr: addr, timeout: timeout, never: !answered.Load()}
		}
		if err != nil {
			return nil, err
		}
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			c.Close()
			return nil, err
		}
		return &answerConn{Conn: c, addr: addr, timeout: timeout, ever: answered}, nil
	}
}

// answerConn is a connection whose reads have a deadline until the first
// byte arrives.
type answerConn struct {
	net.Conn
	addr     string
	timeout  time.Duration
	ever     *atomic.Bool // any connection of the dialer had an answer
	mu       sync.Mutex
	answered bool
}

func (c *answerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.answered {
		return n, err
	}
	if n > 0 {
		c.answered = true
		c.ever.Store(true)
		// Only the first answer is bounded; a stream may then be quiet for
		// hours (HTTP/2 pings find a dead connection).
		if derr := c.Conn.SetReadDeadline(time.Time{}); derr != nil && err == nil {
			err = derr
		}
		return n, err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return n, &noAnswerError{addr: c.addr, timeout: c.timeout, never: !c.ever.Load()}
	}
	return n, err
}
