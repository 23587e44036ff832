package cli

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// reconnector paces the re-opening of a broken stream: a delay growing
// from retryMin to retryMax, and giving up when the server has not
// answered for giveUp.
type reconnector struct {
	e    *env
	what string

	failingSince time.Time // zero while the server answers
	delay        time.Duration
	announced    bool
}

func (e *env) reconnector(what string) *reconnector {
	return &reconnector{e: e, what: what, delay: e.retryMin}
}

// alive records that the server answered.
func (r *reconnector) alive() {
	r.failingSince = time.Time{}
	if r.announced {
		fmt.Fprintf(r.e.Err, "hodei: %s: reconnected\n", r.what)
		r.announced = false
	}
}

// progress records that the stream delivered something new.
func (r *reconnector) progress() {
	r.alive()
	r.delay = r.e.retryMin
}

// retry is called when the stream opened at opened ended with err (nil:
// ended without reaching its end). It waits before the next attempt and
// returns nil, or returns the error that ends the command: a non-transient
// err, a server that never answered, the give-up error, or ctx's error. A
// stream that stayed open a while counts as healthy even if it delivered
// nothing (a quiet job).
func (r *reconnector) retry(ctx context.Context, opened time.Time, err error) error {
	if err != nil && !transient(ctx, err) {
		return err
	}
	if na := (*noAnswerError)(nil); errors.As(err, &na) && na.never {
		return err // no server there to wait for
	}
	now := r.e.now()
	if now.Sub(opened) >= r.e.retryMax {
		r.failingSince = time.Time{}
		r.delay = r.e.retryMin
	}
	if r.failingSince.IsZero() {
		r.failingSince = now
	} else if now.Sub(r.failingSince) >= r.e.giveUp {
		if err == nil {
			return fmt.Errorf("%s: the server keeps ending the stream; gave up after %s", r.what, r.e.giveUp)
		}
		return fmt.Errorf("%s: gave up reconnecting after %s: %w", r.what, r.e.giveUp, err)
	}
	if !r.announced {
		why := "stream ended early"
		if err != nil {
			why = errorText(err)
		}
		fmt.Fprintf(r.e.Err, "hodei: %s: %s; reconnecting\n", r.what, why)
		r.announced = true
	}
	t := time.NewTimer(r.delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	r.delay = min(2*r.delay, r.e.retryMax)
	return nil
}
