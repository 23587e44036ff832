package server

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/webhook"
)

// webhookService manages webhooks; the leader's webhook.Manager sends
// them their events. Replays are sent from the replica that serves them
// (by the leader's subscriber when that is this replica), so its sender
// records no metrics: the series belong to the replica that runs the
// webhooks.
type webhookService struct {
	s    *Server
	send *webhook.Sender
}

func newWebhookService(s *Server) webhookService {
	return webhookService{s: s, send: webhook.NewSender(s.store, webhook.SenderConfig{})}
}

func webhookToProto(w store.Webhook) *hodeiv1.Webhook {
	return &hodeiv1.Webhook{Name: w.Name, Url: w.URL, Types: w.Types, Labels: w.Labels, MaxAttempts: int32(w.MaxAttempts),
		CreatedAt: timestamppb.New(w.CreatedAt)}
}

func (h webhookService) CreateWebhook(ctx context.Context, req *connect.Request[hodeiv1.CreateWebhookRequest]) (*connect.Response[hodeiv1.CreateWebhookResponse], error) {
	p := req.Msg.GetWebhook()
	if p == nil {
		return nil, connectError(&job.FieldError{Field: "webhook", Rule: "is required"})
	}
	w := store.Webhook{Name: p.Name, URL: p.Url, Types: p.Types, Labels: p.Labels, MaxAttempts: int(p.MaxAttempts), Secret: req.Msg.Secret}
	if err := webhook.Validate(&w); err != nil {
		return nil, connectError(err)
	}
	var generated string
	if w.Secret == "" {
		w.Secret = webhook.NewSecret()
		generated = w.Secret
	}
	w, err := h.s.store.CreateWebhook(ctx, w)
	if errors.Is(err, store.ErrWebhookExists) {
		return nil, connect.NewError(connect.CodeAlreadyExists, err)
	}
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.CreateWebhookResponse{Webhook: webhookToProto(w), Secret: generated}), nil
}

func (h webhookService) ListWebhooks(ctx context.Context, _ *connect.Request[hodeiv1.ListWebhooksRequest]) (*connect.Response[hodeiv1.ListWebhooksResponse], error) {
	ws, err := h.s.store.ListWebhooks(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListWebhooksResponse{}
	for _, w := range ws {
		resp.Webhooks = append(resp.Webhooks, webhookToProto(w))
	}
	return connect.NewResponse(resp), nil
}

func (h webhookService) DeleteWebhook(ctx context.Context, req *connect.Request[hodeiv1.DeleteWebhookRequest]) (*connect.Response[hodeiv1.DeleteWebhookResponse], error) {
	if err := h.s.store.DeleteWebhook(ctx, req.Msg.Name); err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.DeleteWebhookResponse{}), nil
}

func (h webhookService) ListWebhookDeliveries(ctx context.Context, req *connect.Request[hodeiv1.ListWebhookDeliveriesRequest]) (*connect.Response[hodeiv1.ListWebhookDeliveriesResponse], error) {
	if req.Msg.Limit < 0 {
		return nil, connectError(&job.FieldError{Field: "limit", Rule: "must not be negative"})
	}
	w, err := h.s.store.GetWebhook(ctx, req.Msg.Name)
	if err != nil {
		return nil, connectError(err)
	}
	failed, err := webhook.Failures(ctx, h.s.bus, w, int(req.Msg.Limit))
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListWebhookDeliveriesResponse{}
	for _, d := range failed {
		resp.Deliveries = append(resp.Deliveries, &hodeiv1.WebhookDelivery{Event: d.Event.Proto(), Attempts: int32(d.Attempts),
			LastError: d.LastError, ParkedAt: timestamppb.New(d.ParkedAt)})
	}
	return connect.NewResponse(resp), nil
}

func (h webhookService) ReplayWebhookDeliveries(ctx context.Context, req *connect.Request[hodeiv1.ReplayWebhookDeliveriesRequest]) (*connect.Response[hodeiv1.ReplayWebhookDeliveriesResponse], error) {
	m := req.Msg
	if m.All && len(m.EventIds) > 0 {
		return nil, connectError(&job.FieldError{Field: "all", Rule: "name event ids or all, not both"})
	}
	w, err := h.s.store.GetWebhook(ctx, m.Name)
	if err != nil {
		return nil, connectError(err)
	}
	res, err := h.send.Replay(ctx, h.s.bus, w, m.EventIds, m.All)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.ReplayWebhookDeliveriesResponse{Delivered: res.Delivered, FailedEventId: res.FailedEventID,
		Error: res.Err, NotTried: res.NotTried}), nil
}
