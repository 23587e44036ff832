package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
)

type eventService struct{ s *Server }

func eventToProto(e eventbus.Event) *hodeiv1.Event {
	return &hodeiv1.Event{Id: e.ID, Type: e.Type, AggregateKind: e.AggregateKind, AggregateId: e.AggregateID,
		Time: timestamppb.New(e.Time), CorrelationId: e.CorrelationID, Payload: e.Payload}
}

func (h eventService) Subscribe(ctx context.Context, req *connect.Request[hodeiv1.SubscribeRequest], stream *connect.ServerStream[hodeiv1.SubscribeResponse]) error {
	m := req.Msg
	known := map[string]bool{}
	for _, t := range eventbus.Types() {
		known[t] = true
	}
	for _, t := range m.Types {
		if !known[t] {
			return connectError(&job.FieldError{Field: "types", Rule: fmt.Sprintf("%q is not an event type", t)})
		}
	}
	f := eventbus.Filter{Types: m.Types, AggregateKind: m.AggregateKind, AggregateID: m.AggregateId}
	err := h.s.bus.Tail(ctx, m.AfterId, f, func(e eventbus.Event) error {
		return stream.Send(&hodeiv1.SubscribeResponse{Event: eventToProto(e)})
	})
	if err != nil && ctx.Err() == nil {
		return connectError(err)
	}
	return nil
}

func (h eventService) ListDeadLetters(ctx context.Context, req *connect.Request[hodeiv1.ListDeadLettersRequest]) (*connect.Response[hodeiv1.ListDeadLettersResponse], error) {
	dls, err := h.s.bus.ListDeadLetters(ctx, req.Msg.Subscriber, int(req.Msg.Limit))
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListDeadLettersResponse{}
	for _, d := range dls {
		resp.DeadLetters = append(resp.DeadLetters, &hodeiv1.DeadLetter{Id: d.ID, Subscriber: d.Subscriber, Event: eventToProto(d.Event),
			Attempts: int32(d.Attempts), LastError: d.LastError, ParkedAt: timestamppb.New(d.ParkedAt)})
	}
	return connect.NewResponse(resp), nil
}

func (h eventService) ReplayDeadLetter(ctx context.Context, req *connect.Request[hodeiv1.ReplayDeadLetterRequest]) (*connect.Response[hodeiv1.ReplayDeadLetterResponse], error) {
	if err := h.s.bus.Replay(ctx, req.Msg.Id); err != nil {
		switch {
		case errors.Is(err, eventbus.ErrUnknownSubscriber):
			return nil, connect.NewError(connect.CodeFailedPrecondition, err)
		case errors.Is(err, eventbus.ErrStillFailing):
			return nil, connect.NewError(connect.CodeAborted, err)
		}
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.ReplayDeadLetterResponse{}), nil
}

type providerService struct{ s *Server }

func (h providerService) toProto(ctx context.Context, p store.Provider, count map[string]int32) *hodeiv1.Provider {
	out := &hodeiv1.Provider{Name: p.Name, Kind: p.Kind, Enabled: p.Enabled, Healthy: p.Healthy, MaxWorkers: int32(p.MaxWorkers),
		IdleTimeout: durationpb.New(p.IdleTimeout), Ephemeral: p.Ephemeral, Workers: count[p.Name], HealthMessage: p.HealthMessage,
		Labels: p.Labels, AnyImage: p.AnyImage}
	if !p.UnhealthySince.IsZero() {
		out.UnhealthySince = timestamppb.New(p.UnhealthySince)
	}
	return out
}

func (h providerService) workerCounts(ctx context.Context) (map[string]int32, error) {
	workers, err := h.s.store.ListWorkers(ctx, "")
	if err != nil {
		return nil, err
	}
	count := map[string]int32{}
	for _, w := range workers {
		if w.State != "terminated" && w.State != "disconnected" {
			count[w.Provider]++
		}
	}
	return count, nil
}

func (h providerService) ListProviders(ctx context.Context, req *connect.Request[hodeiv1.ListProvidersRequest]) (*connect.Response[hodeiv1.ListProvidersResponse], error) {
	provs, err := h.s.store.ListProviders(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	count, err := h.workerCounts(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListProvidersResponse{}
	for _, p := range provs {
		resp.Providers = append(resp.Providers, h.toProto(ctx, p, count))
	}
	return connect.NewResponse(resp), nil
}

func (h providerService) GetProvider(ctx context.Context, req *connect.Request[hodeiv1.GetProviderRequest]) (*connect.Response[hodeiv1.GetProviderResponse], error) {
	p, err := h.s.store.GetProvider(ctx, req.Msg.Name)
	if err != nil {
		return nil, connectError(err)
	}
	count, err := h.workerCounts(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.GetProviderResponse{Provider: h.toProto(ctx, p, count)}), nil
}

func (h providerService) UpdateProvider(ctx context.Context, req *connect.Request[hodeiv1.UpdateProviderRequest]) (*connect.Response[hodeiv1.UpdateProviderResponse], error) {
	m := req.Msg
	p, err := h.s.store.GetProvider(ctx, m.Name)
	if err != nil {
		return nil, connectError(err)
	}
	if m.Enabled != nil {
		p.Enabled = *m.Enabled
	}
	if m.MaxWorkers != nil {
		if *m.MaxWorkers < 0 || *m.MaxWorkers > 10000 {
			return nil, connectError(&job.FieldError{Field: "max_workers", Rule: "must be between 0 and 10000"})
		}
		p.MaxWorkers = int(*m.MaxWorkers)
	}
	if m.IdleTimeout != nil {
		if err := m.IdleTimeout.CheckValid(); err != nil || m.IdleTimeout.AsDuration() < 0 {
			return nil, connectError(&job.FieldError{Field: "idle_timeout", Rule: "must be a non-negative duration"})
		}
		p.IdleTimeout = m.IdleTimeout.AsDuration()
	}
	if m.Ephemeral != nil {
		p.Ephemeral = *m.Ephemeral
	}
	if p, err = h.s.store.UpdateProvider(ctx, p); err != nil {
		return nil, connectError(err)
	}
	count, err := h.workerCounts(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.UpdateProviderResponse{Provider: h.toProto(ctx, p, count)}), nil
}

// Run does this replica's background duties until ctx ends: one write for
// all heartbeats per interval, lease expiry of silent streams, and
// forwarding JobCancelled to the worker running the job.
func (s *Server) Run(ctx context.Context) error {
	from, err := s.bus.Now(ctx)
	if err != nil {
		return fmt.Errorf("cancel forwarder: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		errc <- s.bus.TailFrom(ctx, from, eventbus.Filter{Types: []string{"JobCancelled"}}, func(e eventbus.Event) error {
			id := e.Payload.GetJobCancelled().GetJobId()
			for _, c := range s.workers.all() {
				c.mu.Lock()
				var tokens []int64
				for t, j := range c.running {
					if j == id {
						tokens = append(tokens, t)
					}
				}
				c.mu.Unlock()
				for _, t := range tokens {
					c.send(cancelMsg(t, e.Payload.GetJobCancelled().GetReason()))
				}
			}
			return nil
		})
	}()
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-errc
			return nil
		case err := <-errc:
			return fmt.Errorf("cancel forwarder: %w", err)
		case <-t.C:
		}
		seen := map[string]time.Time{}
		now := time.Now()
		for _, c := range s.workers.all() {
			c.mu.Lock()
			last := c.lastSeen
			c.mu.Unlock()
			if now.Sub(last) > s.cfg.Lease {
				s.log.Warn("worker silent past its lease; closing its stream", "worker_id", c.id)
				c.mu.Lock()
				c.expired = true
				c.mu.Unlock()
				c.close()
				continue
			}
			seen[c.id] = last
		}
		if len(seen) > 0 {
			expired, err := s.store.TouchWorkers(ctx, seen)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("record heartbeats", "err", err)
			}
			// The leader expired these although their stream lives here
			// (e.g. a stall longer than the lease): close the stream; the
			// agent reconnects and reconciles.
			for _, id := range expired {
				if c := s.workers.get(id); c != nil {
					s.log.Warn("worker expired by the leader; closing its stream", "worker_id", id)
					c.close()
				}
			}
		}
	}
}
