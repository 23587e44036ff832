package server

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
)

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

// workerStateNames maps the registry's states to their proto names.
var workerStateNames = map[string]hodeiv1.WorkerState{
	"provisioning": hodeiv1.WorkerState_WORKER_STATE_PROVISIONING,
	"connected":    hodeiv1.WorkerState_WORKER_STATE_CONNECTED,
	"disconnected": hodeiv1.WorkerState_WORKER_STATE_DISCONNECTED,
	"draining":     hodeiv1.WorkerState_WORKER_STATE_DRAINING,
	"terminated":   hodeiv1.WorkerState_WORKER_STATE_TERMINATED,
}

func (h providerService) ListWorkers(ctx context.Context, req *connect.Request[hodeiv1.ListWorkersRequest]) (*connect.Response[hodeiv1.ListWorkersResponse], error) {
	ws, err := h.s.store.LiveWorkers(ctx, req.Msg.Provider)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListWorkersResponse{Workers: make([]*hodeiv1.Worker, len(ws))}
	for i, w := range ws {
		pw := &hodeiv1.Worker{Id: w.ID, Provider: w.Provider, State: workerStateNames[w.State], Labels: w.Labels, Slots: int32(w.Slots),
			Image: w.Image, CpuMillis: w.CPUMillis, MemoryMib: w.MemoryMiB, Running: int32(w.Running), ReplicaId: w.ReplicaID, Hostname: w.Hostname}
		if !w.LastSeen.IsZero() {
			pw.LastSeen = timestamppb.New(w.LastSeen)
		}
		resp.Workers[i] = pw
	}
	return connect.NewResponse(resp), nil
}
