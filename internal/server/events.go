package server

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
)

type eventService struct{ s *Server }

func (h eventService) Subscribe(ctx context.Context, req *connect.Request[hodeiv1.SubscribeRequest], stream *connect.ServerStream[hodeiv1.SubscribeResponse]) error {
	m := req.Msg
	f := eventbus.Filter{Types: m.Types, AggregateKind: m.AggregateKind, AggregateID: m.AggregateId}
	if err := f.Validate(); err != nil {
		return connectError(&job.FieldError{Field: "types", Rule: err.Error()})
	}
	err := h.s.bus.Tail(ctx, m.AfterId, f, func(e eventbus.Event) error {
		return stream.Send(&hodeiv1.SubscribeResponse{Event: e.Proto()})
	})
	if errors.Is(err, eventbus.ErrUnknownEvent) {
		return connectError(&job.FieldError{Field: "after_id", Rule: eventbus.ErrUnknownEvent.Error()})
	}
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
		resp.DeadLetters = append(resp.DeadLetters, &hodeiv1.DeadLetter{Id: d.ID, Subscriber: d.Subscriber, Event: d.Event.Proto(),
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
		case errors.Is(err, eventbus.ErrNoDeadLetter):
			return nil, connect.NewError(connect.CodeNotFound, err)
		}
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.ReplayDeadLetterResponse{}), nil
}
