package agent

import (
	"errors"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// errShuttingDown is the cause of attempts stopped by the agent's own
// shutdown: they end as worker_lost (retryable), not as cancelled.
var errShuttingDown = errors.New("worker shutting down")

// shutdown drains: announce, stop taking jobs, let running jobs finish
// until the drain deadline, cancel the rest, flush reports (at most 5 s),
// say goodbye. Past the hard deadline it kills everything.
func (a *Agent) shutdown() error {
	start := time.Now()
	a.announceShutdown()
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	forced := a.drain(start, done)
	a.flushReports()
	a.sendNow(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Shutdown{Shutdown: &hodeiv1.ShutdownNotice{Final: true, Forced: forced}}})
	if forced {
		return ErrForced
	}
	return nil
}

// announceShutdown stops taking jobs and tells the server.
func (a *Agent) announceShutdown() {
	a.mu.Lock()
	a.draining = true
	n := len(a.attempts)
	a.mu.Unlock()
	a.log.Info("shutting down", "running", n)
	// A signal right after start can come before the stream is up: give it
	// a moment, so that the server hears the notices.
	for deadline := time.Now().Add(2 * time.Second); !a.hasStream() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	a.sendNow(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Shutdown{Shutdown: &hodeiv1.ShutdownNotice{}}})
}

// drain waits until every attempt has ended (done is closed): running
// jobs may finish until the drain deadline, are then cancelled, and past
// the hard deadline (counted from start) killed. It reports whether it
// had to kill.
func (a *Agent) drain(start time.Time, done <-chan struct{}) (forced bool) {
	select {
	case <-done:
		return false
	case <-time.After(a.cfg.DrainTimeout):
	}
	a.cancelAll(errShuttingDown)
	select {
	case <-done:
		return false
	case <-time.After(max(a.cfg.HardTimeout-time.Since(start), 0)):
	}
	// Past the hard deadline: kill every job's process group now.
	// Announced first, so that the server counts the jobs still running
	// and applies the notice before the last reports.
	a.sendNow(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Shutdown{Shutdown: &hodeiv1.ShutdownNotice{Forced: true}}})
	a.killAll()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	return true
}

// cancelAll cancels every attempt the agent holds.
func (a *Agent) cancelAll(cause error) {
	a.mu.Lock()
	for _, at := range a.attempts {
		at.cancel(cause)
	}
	a.mu.Unlock()
}

// killAll sends SIGKILL to the process group of every attempt that
// started one.
func (a *Agent) killAll() {
	a.mu.Lock()
	for _, at := range a.attempts {
		at.kill()
	}
	a.mu.Unlock()
}

// flushReports gives the sender up to 5 s to deliver what the outbox holds.
func (a *Agent) flushReports() {
	flushBy := time.Now().Add(5 * time.Second)
	for a.box.len() > 0 && time.Now().Before(flushBy) {
		select {
		case <-a.box.space:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// goodbye ends the stream from our side after the final notice and waits
// (briefly) for the server to end it. Closing the request side delivers
// everything sent before it; cancelling the stream's context instead
// resets the HTTP/2 stream at once and can drop the last messages sent
// (the shutdown notices), so that the server never learns the worker left.
func (a *Agent) goodbye(connDone <-chan struct{}) {
	a.mu.Lock()
	a.closing = true
	s := a.stream
	a.mu.Unlock()
	if s == nil {
		return
	}
	a.sendMu.Lock()
	_ = s.CloseRequest()
	a.sendMu.Unlock()
	select {
	case <-connDone:
	case <-time.After(2 * time.Second):
	}
}
