package webhook

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/store"
)

// Config configures a Manager. Zero values take the defaults.
type Config struct {
	Logger  *slog.Logger
	Metrics *Metrics
	// Timeout bounds one POST; default DefaultTimeout.
	Timeout time.Duration
	// InitialBackoff doubles after each failed attempt at an event up to
	// MaxBackoff, with +/-25% jitter (the bus's retry); defaults 1s and 1m.
	InitialBackoff, MaxBackoff time.Duration
	// BatchSize is the events a subscriber reads, and sends, between two
	// stores of its cursor: at most this many events of the log are sent
	// again after a crash. Default 50.
	BatchSize int
	// Now is the clock of the signatures' timestamps; default time.Now.
	Now func() time.Time
}

// Manager runs one durable subscriber per webhook.
type Manager struct {
	st   *store.Store
	bus  *eventbus.Bus
	send *Sender
	cfg  Config
	log  *slog.Logger

	mu      sync.Mutex
	running map[string]*delivery // by webhook name
}

// delivery is the running subscriber of one webhook.
type delivery struct {
	id     int64 // the webhook's: a new webhook of the same name has another
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a manager of the webhooks stored in st.
func New(cfg Config, st *store.Store, bus *eventbus.Bus) *Manager {
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 50
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{st: st, bus: bus, cfg: cfg, log: log, running: map[string]*delivery{},
		send: NewSender(st, SenderConfig{Timeout: cfg.Timeout, Metrics: cfg.Metrics, Now: cfg.Now})}
}

// Run sends every webhook its events until ctx ends: a leader duty. It
// reads the webhooks, starts a subscriber for each, and reads them again
// after every WebhookCreated and WebhookDeleted to start and stop
// subscribers. Database errors are retried; it only returns when ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	defer m.stopAll()
	var c eventbus.Cursor
	var err error
	var failing time.Duration
	// The tail starts before the first read of the webhooks: no change
	// can fall between the two.
	for {
		if c, err = m.bus.Now(ctx); err == nil {
			break
		}
		if !m.wait(ctx, &failing, err, "webhooks: read the event position") {
			return nil
		}
	}
	changed := make(chan struct{}, 1)
	changed <- struct{}{}
	var wg sync.WaitGroup
	defer wg.Wait() // the tail ends with ctx, as Run does
	wg.Go(func() {
		f := eventbus.Filter{Types: []string{"WebhookCreated", "WebhookDeleted"}, Lazy: true}
		m.bus.TailFrom(ctx, c, f, func(eventbus.Event) error { //nolint:errcheck // fn never fails
			select {
			case changed <- struct{}{}:
			default:
			}
			return nil
		})
	})
	failing = 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		for {
			err := m.reconcile(ctx)
			if err == nil {
				break
			}
			if !m.wait(ctx, &failing, err, "webhooks: read the webhooks") {
				return nil
			}
		}
		failing = 0
	}
}

// wait logs err and waits the next step of the reconnect-like backoff;
// false when ctx ended.
func (m *Manager) wait(ctx context.Context, failing *time.Duration, err error, msg string) bool {
	if ctx.Err() != nil {
		return false
	}
	*failing = min(max(*failing*2, 100*time.Millisecond), 5*time.Second)
	m.log.Warn(msg, "err", err, "retry_in", *failing)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Duration(float64(*failing) * (0.75 + 0.5*rand.Float64()))):
		return true
	}
}

// reconcile starts a subscriber for every webhook without one and stops
// those of removed webhooks, then deletes what stopped subscribers (here,
// on a former leader, or replaying on another replica) wrote after their
// webhook was removed. It runs only when webhooks change.
func (m *Manager) reconcile(ctx context.Context) error {
	ws, err := m.st.ListWebhooks(ctx)
	if err != nil {
		return err
	}
	want := make(map[string]store.Webhook, len(ws))
	for _, w := range ws {
		want[w.Name] = w
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, d := range m.running {
		if w, ok := want[name]; !ok || w.ID != d.id {
			m.stop(name, d)
		}
	}
	if n, err := m.st.DeleteOrphanWebhookState(ctx); err != nil {
		return err
	} else if n > 0 {
		m.log.Info("webhooks: deleted what removed webhooks left", "rows", n)
	}
	for _, w := range ws {
		if _, ok := m.running[w.Name]; !ok {
			m.start(ctx, w)
		}
	}
	return nil
}

// subscriberConfig is the bus subscriber of w.
func (m *Manager) subscriberConfig(w store.Webhook) eventbus.SubscriberConfig {
	return eventbus.SubscriberConfig{Name: store.WebhookSubscriber(w.Name), Types: w.Types, StartAtNow: true, BatchSize: m.cfg.BatchSize,
		MaxAttempts: w.MaxAttempts, InitialBackoff: m.cfg.InitialBackoff, MaxBackoff: m.cfg.MaxBackoff}
}

// start runs w's subscriber in a goroutine of its own; m.mu is held.
func (m *Manager) start(ctx context.Context, w store.Webhook) {
	sctx, cancel := context.WithCancel(ctx)
	d := &delivery{id: w.ID, cancel: cancel, done: make(chan struct{})}
	m.running[w.Name] = d
	m.log.Info("webhook delivery started", "webhook", w.Name)
	go func() {
		defer close(d.done)
		if err := m.bus.RunSubscriber(sctx, m.subscriberConfig(w), m.send.Handler(w)); err != nil {
			m.log.Error("webhook delivery failed to start", "webhook", w.Name, "err", err)
		}
	}()
}

// stop ends a subscriber and waits for it (an attempt in flight is
// cancelled); m.mu is held.
func (m *Manager) stop(name string, d *delivery) {
	d.cancel()
	<-d.done
	delete(m.running, name)
	m.cfg.Metrics.forget(name)
	m.log.Info("webhook delivery stopped", "webhook", name)
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, d := range m.running {
		m.stop(name, d)
	}
}
