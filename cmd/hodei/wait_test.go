package main

import (
	"testing"
	"time"
)

// eventually polls cond every 10 ms until it holds, or fails the test
// after timeout. It is the one way the tests of this package wait.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
