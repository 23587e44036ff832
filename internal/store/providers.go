package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// Provider is a provider's stored configuration and health.
type Provider struct {
	Name           string
	Kind           string
	Enabled        bool
	MaxWorkers     int
	IdleTimeout    time.Duration
	Ephemeral      bool
	Labels         map[string]string
	AnyImage       bool
	Healthy        bool
	UnhealthySince time.Time
	HealthMessage  string
}

// CanServe says whether the provider can start a worker for a job needing
// image and labels, and if not, why.
func (p Provider) CanServe(image string, labels map[string]string) (bool, string) {
	if image != "" && !p.AnyImage {
		return false, fmt.Sprintf("provider %s (%s) cannot run image %q", p.Name, p.Kind, image)
	}
	var missing []string
	for k, v := range labels {
		if have, ok := p.Labels[k]; !ok || have != v {
			missing = append(missing, k+"="+v)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return false, fmt.Sprintf("provider %s starts no worker with label %s", p.Name, strings.Join(missing, ", "))
	}
	return true, ""
}

func providerFromRow(r db.Provider) Provider {
	p := Provider{Name: r.Name, Kind: r.Kind, Enabled: r.Enabled, MaxWorkers: int(r.MaxWorkers), IdleTimeout: time.Duration(r.IdleTimeoutMs) * time.Millisecond,
		Ephemeral: r.Ephemeral, AnyImage: r.AnyImage, Healthy: r.Healthy, HealthMessage: r.HealthMessage}
	_ = json.Unmarshal(r.Labels, &p.Labels)
	if r.UnhealthySince != nil {
		p.UnhealthySince = *r.UnhealthySince
	}
	return p
}

// SeedProvider registers a configured provider. Settings changed through
// the API since are kept; kind, labels and image support are refreshed.
func (s *Store) SeedProvider(ctx context.Context, p Provider) error {
	labels, _ := json.Marshal(nonNil(p.Labels))
	return s.q.SeedProvider(ctx, db.SeedProviderParams{Name: p.Name, Kind: p.Kind, MaxWorkers: int32(p.MaxWorkers),
		IdleTimeoutMs: p.IdleTimeout.Milliseconds(), Ephemeral: p.Ephemeral, Labels: labels, AnyImage: p.AnyImage, Now: s.now()})
}

// ListProviders returns every provider.
func (s *Store) ListProviders(ctx context.Context) ([]Provider, error) {
	rows, err := s.q.ListProviders(ctx)
	if err != nil {
		return nil, fmt.Errorf("list providers: %w", err)
	}
	out := make([]Provider, len(rows))
	for i, r := range rows {
		out[i] = providerFromRow(r)
	}
	return out, nil
}

// GetProvider returns one provider.
func (s *Store) GetProvider(ctx context.Context, name string) (Provider, error) {
	r, err := s.q.GetProvider(ctx, name)
	if err != nil {
		if IsNoRows(err) {
			return Provider{}, fmt.Errorf("provider %q: %w", name, job.ErrNotFound)
		}
		return Provider{}, err
	}
	return providerFromRow(r), nil
}

// UpdateProvider stores new settings (enabled, limits) of a provider.
func (s *Store) UpdateProvider(ctx context.Context, p Provider) (Provider, error) {
	r, err := s.q.UpdateProviderSettings(ctx, db.UpdateProviderSettingsParams{Enabled: p.Enabled, MaxWorkers: int32(p.MaxWorkers),
		IdleTimeoutMs: p.IdleTimeout.Milliseconds(), Ephemeral: p.Ephemeral, Now: s.now(), Name: p.Name})
	if err != nil {
		if IsNoRows(err) {
			return Provider{}, fmt.Errorf("provider %q: %w", p.Name, job.ErrNotFound)
		}
		return Provider{}, err
	}
	return providerFromRow(r), nil
}

// SetProviderHealth records a health change and publishes its events:
// ProviderHealthChanged, and ProviderMarkedUnhealthy or ProviderRecovered.
func (s *Store) SetProviderHealth(ctx context.Context, name string, healthy bool, message string, since time.Time) error {
	now := s.now()
	p := db.SetProviderHealthParams{Healthy: healthy, HealthMessage: message, Now: now, Name: name}
	events := []eventbus.Event{eventbus.New("provider", name, &hodeiv1.ProviderHealthChanged{Provider: name, Healthy: healthy, Reason: message})}
	if healthy {
		events = append(events, eventbus.New("provider", name, &hodeiv1.ProviderRecovered{Provider: name, UnhealthyFor: durationpbOf(now.Sub(since))}))
	} else {
		p.UnhealthySince = &now
		events = append(events, eventbus.New("provider", name, &hodeiv1.ProviderMarkedUnhealthy{Provider: name, Reason: message}))
	}
	return s.InTx(ctx, func(tx pgx.Tx) error {
		if err := db.New(tx).SetProviderHealth(ctx, p); err != nil {
			return err
		}
		_, err := eventbus.Publish(ctx, tx, events...)
		return err
	})
}

// ProviderWorker is a live worker of a provider, with its load.
type ProviderWorker struct {
	ID        string
	State     string
	Image     string
	Labels    map[string]string
	Slots     int
	Handle    []byte
	Running   int
	Attempts  int // ever assigned
	IdleSince time.Time
	CreatedAt time.Time
}

// ProviderWorkers lists a provider's live workers.
func (s *Store) ProviderWorkers(ctx context.Context, provider string) ([]ProviderWorker, error) {
	rows, err := s.q.ProviderWorkers(ctx, provider)
	if err != nil {
		return nil, fmt.Errorf("workers of %s: %w", provider, err)
	}
	out := make([]ProviderWorker, len(rows))
	for i, r := range rows {
		out[i] = ProviderWorker{ID: r.ID.String(), State: r.State, Image: r.Image, Slots: int(r.Slots), Handle: r.Handle,
			Running: int(r.Running), Attempts: int(r.Attempts), IdleSince: r.IdleSince, CreatedAt: r.CreatedAt}
		_ = json.Unmarshal(r.Labels, &out[i].Labels)
	}
	return out, nil
}

// DrainIfIdle stops claims for a worker and reports whether it is idle:
// the drain waits for claims in flight (they hold a share lock on the
// worker), so a worker found idle afterwards gets no new job. A busy
// worker is put back to connected.
func (s *Store) DrainIfIdle(ctx context.Context, id string) (bool, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return false, err
	}
	now := s.now()
	n, err := s.q.DrainWorker(ctx, db.DrainWorkerParams{Now: now, ID: uid})
	if err != nil || n == 0 {
		return false, err
	}
	running, err := s.q.CountRunningAttempts(ctx, uid)
	if err != nil {
		return false, err
	}
	if running > 0 {
		return false, s.q.UndrainWorker(ctx, db.UndrainWorkerParams{Now: now, ID: uid})
	}
	return true, nil
}

// WorkerTerminated records that a provider stopped a worker on purpose.
func (s *Store) WorkerTerminated(ctx context.Context, id, provider, reason string) error {
	if _, err := s.WorkerGone(ctx, id, "terminated", reason, true); err != nil {
		return err
	}
	return s.PublishEvents(ctx, eventbus.New("worker", id, &hodeiv1.WorkerTerminated{WorkerId: id, Provider: provider, Reason: reason}))
}

// InstallationID is this installation's stable id.
func (s *Store) InstallationID(ctx context.Context) (string, error) {
	id, err := s.q.InstallationID(ctx)
	if IsNoRows(err) { // another server created it concurrently: read it now
		id, err = s.q.InstallationID(ctx)
	}
	return id, err
}

// MarkDraining records that a worker takes no more jobs (claims skip it).
func (s *Store) MarkDraining(ctx context.Context, id string) error {
	uid, err := uuid.Parse(id)
	if err != nil {
		return err
	}
	_, err = s.q.DrainWorker(ctx, db.DrainWorkerParams{Now: s.now(), ID: uid})
	return err
}
