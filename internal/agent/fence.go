package agent

import (
	"context"
	"fmt"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// lostContact is the cause of the attempts the agent killed because it
// lost contact with the server for about a lease (self-fencing): they end
// as worker_lost.
type lostContact struct{ silent time.Duration }

func (e *lostContact) Error() string {
	return fmt.Sprintf("agent lost contact with the server for %s", e.silent.Round(time.Second))
}

// fenceAfter is how long the agent may go without hearing the server
// before it kills its jobs: lease - 2 heartbeat intervals.
//
// The server fails a worker's attempts at its own last receipt from the
// worker + lease, and never earlier (its check runs every interval, so it
// may be up to an interval later). The agent's contact is its last receipt
// of an answer from the server (a heartbeat's answer, an ack, the settings
// that answer a hello); the server received what it answers before it
// answered, and its receipt time is its last receipt at that point, so the
// server's last receipt precedes the agent's last contact by the answer's
// transit, and that is below an interval unless the link is already dead
// (the agent hears an answer every interval when all is well). Killing at
// contact + lease - 2 intervals therefore happens at least one interval
// before the server can fail the attempts: that interval covers the
// transit; the other one covers the agent's own delay (its timer, the kill,
// a busy machine). With the defaults (lease 10 s, interval 2 s) the agent
// kills after 6 s of silence. A server whose interval is above a quarter of
// its lease gets half the lease as the margin instead.
func fenceAfter(lease, interval time.Duration) time.Duration {
	return lease - min(2*interval, lease/2)
}

// heard records a message of the server that proves it received this
// agent's messages (an answer), and moves the guardian's deadline on.
func (a *Agent) heard() {
	now := time.Since(a.epoch)
	a.contact.Store(int64(now))
	after := time.Duration(a.fenceAfter.Load())
	if after <= 0 || a.guard == nil {
		return
	}
	until := now + after + guardSlack
	last := a.guardUntil.Load()
	if until-time.Duration(last) < guardRenewStep || !a.guardUntil.CompareAndSwap(last, int64(until)) {
		return
	}
	a.guard.renew(a.epoch.Add(until))
}

// The guardian fences a frozen agent (stopped, or stalled past its own
// fence): the agent sends it contact + fenceAfter + guardSlack each time
// that moves by guardRenewStep, and the guardian kills the listed groups
// once that passes. The slack leaves a live agent's own fence the first
// move; with the defaults the guardian acts 6.5 s into a silence, at least
// 1.5 s before the server can retry.
const (
	guardSlack     = 500 * time.Millisecond
	guardRenewStep = 250 * time.Millisecond
)

// silence is how long the agent has not heard from the server.
func (a *Agent) silence() time.Duration {
	return time.Since(a.epoch) - time.Duration(a.contact.Load())
}

// applySettings takes the lease and heartbeat interval of the server's
// settings: a server that states a lease answers every heartbeat, and only
// then does the agent fence itself.
func (a *Agent) applySettings(s *hodeiv1.WorkerSettings) {
	if s.GetLease() == nil || s.GetHeartbeatInterval() == nil {
		return
	}
	lease, interval := s.GetLease().AsDuration(), s.GetHeartbeatInterval().AsDuration()
	if lease <= 0 || interval <= 0 {
		return
	}
	a.fenceAfter.Store(int64(fenceAfter(lease, interval)))
}

// fenceLoop kills the running jobs when the agent has not heard from the
// server for fenceAfter: by then the server may soon fail the attempts and
// retry them elsewhere, and a retry must never run next to the attempt it
// replaces. A contact before that changes nothing.
func (a *Agent) fenceLoop(ctx context.Context) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	fencedAt := int64(-1) // the contact the last fence followed
	for {
		wait := time.Second // until a server states its lease
		if after := time.Duration(a.fenceAfter.Load()); after > 0 {
			silent := a.silence()
			if silent >= after {
				contact := a.contact.Load()
				a.fence(silent, contact != fencedAt)
				fencedAt = contact
				wait = after / 4
			} else {
				wait = after - silent
			}
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fence kills the process group of every attempt with SIGKILL (no grace:
// the lease is as good as gone) and ends the ones waiting for a slot. The
// first time after a contact (first) it also ends the current stream,
// which cannot be trusted any more (a stream opened since then is left to
// finish its handshake): the agent reconnects and reports the attempts as
// lost (worker_lost).
func (a *Agent) fence(silent time.Duration, first bool) {
	cause := &lostContact{silent: silent}
	a.mu.Lock()
	var killed []string
	for _, at := range a.attempts {
		if at.fenced {
			continue
		}
		at.fenced = true
		at.cancel(cause)
		at.kill()
		killed = append(killed, at.jobID)
	}
	endSession := a.endSession
	a.mu.Unlock()
	if len(killed) > 0 {
		a.log.Error("no answer from the server for nearly its lease; killed the running jobs before the server retries them elsewhere",
			"silent", silent.Round(time.Millisecond), "killed_jobs", killed)
	}
	if first && endSession != nil {
		a.log.Warn("no answer from the server for nearly its lease; reconnecting", "silent", silent.Round(time.Millisecond))
		endSession()
	}
}
