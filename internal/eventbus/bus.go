package eventbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/hodei-dev/hodei/internal/store/db"
)

// Handler handles one event. It must be idempotent.
type Handler func(ctx context.Context, e Event) error

// Config configures a Bus. Zero values take the documented defaults.
type Config struct {
	// SafetyPoll is how often subscribers re-read without a wake-up, to
	// cover a lost notification. Default 30s; negative disables it.
	SafetyPoll time.Duration
	// ReconnectMin and ReconnectMax bound the listener's reconnect backoff
	// (default 100ms and 5s).
	ReconnectMin, ReconnectMax time.Duration
	Logger                     *slog.Logger
	Metrics                    *Metrics // nil = no metrics
	// UnsafeNoGapGuard delivers events without waiting for older
	// transactions. Only the test that proves the guard is needed sets it.
	UnsafeNoGapGuard bool
	// Now is the clock (dead-letter times, retention cut-off); default
	// time.Now.
	Now func() time.Time
}

// SubscriberConfig configures a durable subscriber.
type SubscriberConfig struct {
	Name string
	// Types filters the delivered events by type; empty = all. Filtered
	// events still advance the cursor.
	Types []string
	// StartAtNow makes a subscriber that has no cursor yet start at the
	// current position instead of the beginning of the log.
	StartAtNow bool
	BatchSize  int // events read per query; default 500
	// MaxAttempts is how often a failing handler is called for one event
	// before the event is dead-lettered; default 5.
	MaxAttempts int
	// InitialBackoff doubles per failed attempt up to MaxBackoff, with
	// +/-25% jitter. Defaults 100ms and 10s.
	InitialBackoff, MaxBackoff time.Duration
}

// Bus connects publishers' NOTIFYs to subscribers. Register subscribers
// with Subscribe before Run, or run them with RunSubscriber while it runs.
type Bus struct {
	pool *pgxpool.Pool
	q    *db.Queries
	cfg  Config
	log  *slog.Logger

	mu      sync.Mutex
	subs    []*subscriber
	byName  map[string]*subscriber
	wakers  map[chan struct{}]struct{}
	running bool
	// hints are other NOTIFY channels listened to on the same connection
	// (e.g. new log output); not events, just wake-ups.
	hints map[string]func(payload string)
	feed  *feed
}

// NewBus returns a bus on pool.
func NewBus(pool *pgxpool.Pool, cfg Config) *Bus {
	if cfg.SafetyPoll == 0 {
		cfg.SafetyPoll = 30 * time.Second
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Bus{pool: pool, q: db.New(indexOnly{pool}), cfg: cfg, log: log, byName: map[string]*subscriber{}, wakers: map[chan struct{}]struct{}{}, feed: newFeed()}
}

// Subscribe registers a durable subscriber. It panics after Run started or
// on a duplicate name: both are wiring bugs.
func (b *Bus) Subscribe(cfg SubscriberConfig, h Handler) {
	s := b.newSubscriber(cfg, h)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running {
		panic("eventbus: Subscribe after Run")
	}
	if err := b.register(s); err != nil {
		panic("eventbus: " + err.Error())
	}
	b.subs = append(b.subs, s)
}

// RunSubscriber runs a durable subscriber in the caller's goroutine until
// ctx ends (then it returns nil): for subscribers that come and go while
// the bus runs, where Subscribe registers them for the life of Run. Its
// notifications come from Run's listener, so call it while Run runs. No
// other subscriber of this bus may have its name while it runs. When it
// returns, its metric series are removed, so that the series of
// subscribers that came and went do not pile up.
func (b *Bus) RunSubscriber(ctx context.Context, cfg SubscriberConfig, h Handler) error {
	s := b.newSubscriber(cfg, h)
	b.mu.Lock()
	err := b.register(s)
	b.mu.Unlock()
	if err != nil {
		return err
	}
	defer func() {
		b.mu.Lock()
		delete(b.byName, s.cfg.Name)
		delete(b.wakers, s.wake)
		b.mu.Unlock()
		b.cfg.Metrics.forget(s.cfg.Name)
	}()
	return s.run(ctx)
}

// withDefaults fills in the documented defaults of a SubscriberConfig.
func (cfg SubscriberConfig) withDefaults() SubscriberConfig {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	return cfg
}

func (b *Bus) newSubscriber(cfg SubscriberConfig, h Handler) *subscriber {
	cfg = cfg.withDefaults()
	s := &subscriber{bus: b, cfg: cfg, h: h, m: b.cfg.Metrics, wake: make(chan struct{}, 1)}
	if len(cfg.Types) > 0 {
		s.types = map[string]bool{}
		for _, t := range cfg.Types {
			s.types[t] = true
		}
	}
	return s
}

// register names s on the bus and lets notifications wake it; b.mu is
// held.
func (b *Bus) register(s *subscriber) error {
	if _, dup := b.byName[s.cfg.Name]; dup || s.cfg.Name == "" {
		return fmt.Errorf("bad or duplicate subscriber name %q", s.cfg.Name)
	}
	b.byName[s.cfg.Name] = s
	b.wakers[s.wake] = struct{}{}
	return nil
}

// registered returns the subscriber of that name this bus runs, or nil.
func (b *Bus) registered(name string) *subscriber {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byName[name]
}

// Run listens for notifications and runs every subscriber until ctx ends.
func (b *Bus) Run(ctx context.Context) error {
	b.mu.Lock()
	b.running = true
	subs := b.subs
	b.mu.Unlock()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return b.listen(ctx) })
	g.Go(func() error { return b.runFeed(ctx) })
	for _, s := range subs {
		g.Go(func() error { return s.run(ctx) })
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Wake wakes every subscriber and tail of this process, as a notification
// would.
func (b *Bus) Wake() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for w := range b.wakers {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

func (b *Bus) addWaker(w chan struct{}) {
	b.mu.Lock()
	b.wakers[w] = struct{}{}
	b.mu.Unlock()
}

func (b *Bus) removeWaker(w chan struct{}) {
	b.mu.Lock()
	delete(b.wakers, w)
	b.mu.Unlock()
}

// listen holds the LISTEN connection, reconnecting with backoff; every
// (re)connect wakes everyone so that they catch up. The backoff starts
// again from ReconnectMin once a connection was established.
func (b *Bus) listen(ctx context.Context) error {
	delay := b.cfg.ReconnectMin
	for {
		connected, err := b.listenOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			delay = b.cfg.ReconnectMin
		}
		b.cfg.Metrics.reconnect()
		b.log.Warn("event listener lost its connection", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(jitter(delay)):
		}
		delay = min(delay*2, b.cfg.ReconnectMax)
	}
}

// listenOnce listens on one connection until it fails; connected reports
// whether LISTEN succeeded.
func (b *Bus) listenOnce(ctx context.Context) (connected bool, err error) {
	pc, err := b.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	// The connection carries LISTEN state: never hand it back to the pool.
	conn := pc.Hijack()
	defer conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return false, err
	}
	b.mu.Lock()
	hints := b.hints
	b.mu.Unlock()
	for ch := range hints {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return false, err
		}
	}
	// Anything may have happened while we were not listening.
	b.Wake()
	for _, fn := range hints {
		fn("")
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		if n.Channel == Channel {
			b.Wake()
		} else if fn := hints[n.Channel]; fn != nil {
			fn(n.Payload)
		}
	}
}

// OnNotify calls fn with the payload of every NOTIFY on channel, and with
// "" after every (re)connect of the listener (anything may have been
// missed). It is for wake-up hints that are not events. Call before Run.
func (b *Bus) OnNotify(channel string, fn func(payload string)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running {
		panic("eventbus: OnNotify after Run")
	}
	if b.hints == nil {
		b.hints = map[string]func(string){}
	}
	b.hints[channel] = fn
}

// maxRowsPerRead bounds the rows of event_batches one read fetches.
const maxRowsPerRead = 64

// read returns at most limit events after (xid, id) that may be passed;
// more reports that the log may hold more after them that may be passed
// too (read again), held that events exist that are held back by older
// transactions.
func (b *Bus) read(ctx context.Context, xid, id int64, limit int) (events []Event, more, held bool, err error) {
	maxRows := min(limit, maxRowsPerRead)
	rows, err := b.q.ReadEvents(ctx, db.ReadEventsParams{AfterXid: strconv.FormatInt(xid, 10), AfterID: id, MaxRows: int32(maxRows)})
	if err != nil {
		return nil, false, false, fmt.Errorf("read events: %w", err)
	}
	n := 0
	for _, r := range rows {
		n += len(r.Types)
	}
	events = make([]Event, 0, min(n, limit))
	for _, r := range rows {
		if r.Xid >= r.Xmin && !b.cfg.UnsafeNoGapGuard {
			return events, false, true, nil
		}
		er := row{FirstID: r.FirstID, Xid: r.Xid, Types: r.Types, AggregateKinds: r.AggregateKinds, AggregateIds: r.AggregateIds,
			CorrelationIds: r.CorrelationIds, CreatedAt: r.CreatedAt, Payloads: r.Payloads}
		next := r.FirstID
		if r.Xid == xid && id >= next {
			next = id + 1 // the cursor's own row: resume after the cursor
		}
		for eid := next; eid < r.FirstID+int64(len(r.Types)); eid++ {
			if len(events) == limit {
				return events, true, false, nil
			}
			e, err := er.event(eid)
			if err != nil {
				return nil, false, false, err
			}
			events = append(events, e)
		}
	}
	return events, len(rows) == maxRows, false, nil
}

// Position returns the current end of the log as a cursor: events read
// after it are the ones published from now on (plus possibly a few that
// committed just before).
func (b *Bus) Position(ctx context.Context) (xid, id int64, err error) {
	xid, err = b.q.CurrentEventPosition(ctx)
	return xid, 1<<63 - 1, err
}

// PositionOf returns the cursor of an event id, for starting after it.
func (b *Bus) PositionOf(ctx context.Context, id int64) (xid int64, err error) {
	return b.q.EventPosition(ctx, id)
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.75 + 0.5*rand.Float64()))
}

// heldBackDelay is the re-read schedule while older transactions hold
// events back.
func heldBackDelay(prev time.Duration) time.Duration {
	if prev == 0 {
		return time.Millisecond
	}
	return min(prev*2, 50*time.Millisecond)
}

func pgxBeginFunc(ctx context.Context, b *Bus, fn func(q *db.Queries) error) error {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	if err := fn(db.New(tx)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
