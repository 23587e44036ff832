package agent

import (
	"sync/atomic"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// Counters are an agent's totals since it started. The agent sends them
// with every heartbeat (the server exports them per worker); Counters
// also returns them, for a local metrics endpoint.
type Counters struct {
	Reconnects      int64         // streams re-established after one was lost
	ReconnectTime   time.Duration // summed: from the loss of a stream to the next welcome
	LogLines        int64         // output lines read from jobs
	LogLinesDropped int64         // of those, the ones discarded (the log buffer stayed full)
}

// counters are updated once per attempt end and once per reconnect.
type counters struct {
	reconnects     atomic.Int64
	reconnectNanos atomic.Int64
	logLines       atomic.Int64
	logDropped     atomic.Int64
	lostAt         atomic.Int64 // when the stream was lost (Unix ns); 0: connected, or never connected
}

// lost records that a stream that was up broke.
func (c *counters) lost(now time.Time) { c.lostAt.CompareAndSwap(0, now.UnixNano()) }

// welcomed records a new stream's welcome: a reconnect when one was lost.
func (c *counters) welcomed(now time.Time) {
	if at := c.lostAt.Swap(0); at != 0 {
		c.reconnects.Add(1)
		c.reconnectNanos.Add(now.UnixNano() - at)
	}
}

// attemptEnded adds an attempt's output lines.
func (c *counters) attemptEnded(sent, dropped int64) {
	c.logLines.Add(sent + dropped)
	c.logDropped.Add(dropped)
}

func (c *counters) snapshot() Counters {
	return Counters{Reconnects: c.reconnects.Load(), ReconnectTime: time.Duration(c.reconnectNanos.Load()),
		LogLines: c.logLines.Load(), LogLinesDropped: c.logDropped.Load()}
}

func (c *counters) proto() *hodeiv1.AgentCounters {
	s := c.snapshot()
	return &hodeiv1.AgentCounters{Reconnects: s.Reconnects, ReconnectSeconds: s.ReconnectTime.Seconds(), LogLines: s.LogLines, LogLinesDropped: s.LogLinesDropped}
}

// Counters returns the agent's totals since it started.
func (a *Agent) Counters() Counters { return a.counters.snapshot() }
