package agent

import (
	"testing"
	"time"
)

func TestFenceAfterLeavesTwoIntervals(t *testing.T) {
	for _, c := range []struct{ lease, interval, want time.Duration }{
		{10 * time.Second, 2 * time.Second, 6 * time.Second},
		{6 * time.Second, 1500 * time.Millisecond, 3 * time.Second},
		{4 * time.Second, 3 * time.Second, 2 * time.Second}, // margin capped at half the lease
	} {
		if got := fenceAfter(c.lease, c.interval); got != c.want {
			t.Errorf("fenceAfter(%s, %s) = %s, want %s", c.lease, c.interval, got, c.want)
		}
	}
}

// TestRetryInReachesTheServerBeforeFencing: while the agent holds
// attempts, it retries a lost server at least four times before the
// silence after which it kills them; otherwise the backoff stands.
func TestRetryInReachesTheServerBeforeFencing(t *testing.T) {
	a, err := New(Config{Servers: []string{"127.0.0.1:1"}, BootstrapToken: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.retryIn(16 * time.Second); got != 16*time.Second {
		t.Errorf("no lease known: retry in %s, want the backoff (16s)", got)
	}
	a.fenceAfter.Store(int64(6 * time.Second))
	if got := a.retryIn(16 * time.Second); got != 16*time.Second {
		t.Errorf("no attempt held: retry in %s, want the backoff (16s)", got)
	}
	a.attempts[1] = &attempt{}
	if got := a.retryIn(16 * time.Second); got != 1500*time.Millisecond {
		t.Errorf("attempts held, fencing after 6s: retry in %s, want 1.5s", got)
	}
	if got := a.retryIn(time.Second); got != time.Second {
		t.Errorf("attempts held, backoff 1s: retry in %s, want 1s", got)
	}
}
