package docker

import (
	"context"
	"fmt"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
)

// Events calls died with the worker id of each container of this
// provider and installation that dies (its agent exited, was killed or
// ran out of memory), until ctx ends; then it returns nil. It watches the
// engine's event stream from the moment Events is called and reconnects
// with backoff when the stream breaks, asking the engine to replay what
// it missed, so a death may be reported more than once: died must be
// idempotent. died runs on Events' goroutine and should not block long.
func (p *Provider) Events(ctx context.Context, died func(workerID string)) error {
	since := time.Now()
	delay := 100 * time.Millisecond
	for {
		got, err := p.watch(ctx, &since, died)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			delay = 100 * time.Millisecond
		}
		p.log.Warn("docker event stream broke", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// watch reads one event stream from *since until it fails; got reports
// whether any event arrived.
func (p *Provider) watch(ctx context.Context, since *time.Time, died func(string)) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := p.filters().Add("type", string(events.ContainerEventType)).Add("event", string(events.ActionDie))
	r := p.cli.Events(ctx, client.EventsListOptions{Filters: f, Since: fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond())})
	for {
		select {
		case m := <-r.Messages:
			got = true
			if m.TimeNano > 0 {
				*since = time.Unix(0, m.TimeNano)
			}
			if id := m.Actor.Attributes[LabelWorkerID]; id != "" {
				died(id)
			}
		case err := <-r.Err:
			if err == nil {
				err = fmt.Errorf("stream ended")
			}
			return got, err
		}
	}
}
