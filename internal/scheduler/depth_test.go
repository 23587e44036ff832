package scheduler

import (
	"testing"
	"time"
)

// TestCountPause: fast counts wait the debounce interval; slow ones wait
// countShare times their duration, so counting stays a small share of the
// leader's time however deep the queue.
func TestCountPause(t *testing.T) {
	debounce := 500 * time.Millisecond
	for _, c := range []struct{ took, want time.Duration }{
		{0, debounce},
		{4 * time.Millisecond, debounce},
		{5 * time.Millisecond, debounce},
		{10 * time.Millisecond, time.Second},
		{120 * time.Millisecond, 12 * time.Second},
		{time.Second, 100 * time.Second},
	} {
		if got := countPause(debounce, c.took); got != c.want {
			t.Errorf("countPause(%s, %s) = %s, want %s", debounce, c.took, got, c.want)
		}
	}
}
