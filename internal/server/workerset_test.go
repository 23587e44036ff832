package server

import (
	"testing"
	"time"
)

// TestAdaptiveQueueFollowsThePace: a worker with adaptive prefetch may
// hold beyond its slots as many jobs as it finished in the last
// paceWindow, within its prefetch; nothing when its jobs take longer, and
// a fixed prefetch is held whatever the pace.
func TestAdaptiveQueueFollowsThePace(t *testing.T) {
	c := &workerConn{slots: 2, prefetch: 32, adaptive: true, running: map[int64]string{}}
	now := time.Now()
	if n := c.queueLimit(now); n != 0 {
		t.Fatalf("before any result: %d, want 0", n)
	}
	for i := int64(0); i < 10; i++ {
		c.resultArrived(i)
	}
	if n := c.queueLimit(time.Now()); n != 10 {
		t.Fatalf("after 10 results at once: %d, want 10", n)
	}
	if n := c.queueLimit(time.Now().Add(paceWindow)); n != 0 {
		t.Fatalf("a window later: %d, want 0 (the jobs now take longer than the window)", n)
	}
	for i := int64(0); i < 1000; i++ {
		c.resultArrived(i)
	}
	if n := c.queueLimit(time.Now()); n != 32 {
		t.Fatalf("after 1,000 results at once: %d, want the prefetch, 32", n)
	}
	c.prefetch = 1000
	if n := c.queueLimit(time.Now()); n != maxAdaptivePrefetch {
		t.Fatalf("with a prefetch of 1,000: %d, want the adaptive bound %d", n, maxAdaptivePrefetch)
	}
	fixed := &workerConn{slots: 2, prefetch: 3, running: map[int64]string{}}
	if n := fixed.queueLimit(now); n != 3 {
		t.Fatalf("fixed prefetch 3: %d, want 3", n)
	}
}
