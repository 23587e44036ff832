package runner

import (
	"bytes"
	"context"
	"sync"
	"time"
)

// Line is one line of output.
type Line struct {
	Stream Stream
	// Data is the line without its trailing newline. It is owned by the
	// Line (never aliases a buffer passed to Write).
	Data []byte
	// Partial reports that the line does not end with a newline: it was
	// split because it exceeded BatcherConfig.MaxLine (every piece but the
	// last is Partial), its start waited FlushInterval for its end, another
	// stream wrote meanwhile, or the stream ended without a final newline.
	// The stream's bytes are its lines' Data, each followed by a newline
	// unless Partial, in order.
	Partial bool
	// Time is when the first byte of the line was written.
	Time time.Time
}

// Batch is a group of lines handed to the send function.
type Batch struct {
	// Seq numbers the batches of a Batcher 1, 2, 3, ... with no gaps. A
	// retried batch keeps its Seq and content.
	Seq   int64
	Lines []Line
	// Dropped is the number of lines dropped, because the buffer was full,
	// between the previous batch and this one.
	Dropped int64
}

// BatcherConfig configures a Batcher. Zero values select the defaults.
type BatcherConfig struct {
	// MaxLines is the maximum number of lines in a batch; a batch is sent
	// as soon as this many lines are buffered. Default 100. It is capped
	// at BufferLines.
	MaxLines int
	// FlushInterval is the longest time a line waits for more lines
	// before a non-full batch is sent, and the longest time the start of
	// a line waits for its end before it is sent as a Partial line.
	// Default 250ms.
	FlushInterval time.Duration
	// MaxLine is the maximum length of a line in bytes; longer lines are
	// split into pieces of MaxLine bytes. Default 64 KiB.
	MaxLine int
	// BufferLines is the maximum number of complete lines waiting to be
	// taken into a batch. When it is exceeded the oldest waiting lines
	// are dropped. Default 10,000.
	BufferLines int
	// BlockFor is how long Write may wait for room when the buffer is
	// full, slowing the process down through its pipe instead of dropping
	// its output. After a wait that timed out, Write drops the oldest
	// lines without waiting until the buffer has drained to half. Default
	// 0: never wait.
	BlockFor time.Duration
	// Now is the clock used for Line.Time. Default time.Now. Flush timing
	// always uses the real clock.
	Now func() time.Time
}

// Batcher groups the output of a process into lines and the lines into
// batches for a send function.
//
// Write waits at most BlockFor for sending: lines wait in a bounded buffer, and when
// that is full the oldest waiting lines are dropped and counted. Run is the
// single sender loop; Close marks the end of input.
type Batcher struct {
	cfg  BatcherConfig
	send func(ctx context.Context, b Batch) error

	// wake tells Run that the buffer changed in a way that may make a
	// batch ready.
	wake chan struct{}

	mu       sync.Mutex
	partials []partialLine // per stream, in order of first use
	queue    []Line        // complete lines not yet taken into a batch
	queuedAt time.Time     // real time the queue last became non-empty
	closed   bool
	space    chan struct{} // closed and replaced when lines leave the queue
	overflow bool          // a wait for room timed out; drop without waiting
	dropped  int64         // dropped since the last batch was taken
	seq      int64         // Seq of the last batch taken
	sentN    int64         // lines in batches whose send succeeded
	droppedN int64         // lines dropped in total
}

// partialLine is the unterminated end of a stream seen so far.
type partialLine struct {
	stream Stream
	data   []byte    // at most cfg.MaxLine bytes
	time   time.Time // cfg.Now when data's first byte was written
	since  time.Time // real time data became non-empty; zero when empty
}

// NewBatcher returns a Batcher that delivers batches to send once Run is
// called. send is only ever called from Run, one call at a time; it must not
// modify the batch, which is resent as is if send fails.
func NewBatcher(cfg BatcherConfig, send func(ctx context.Context, b Batch) error) *Batcher {
	if cfg.MaxLines <= 0 {
		cfg.MaxLines = 100
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 250 * time.Millisecond
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = 64 << 10
	}
	if cfg.BufferLines <= 0 {
		cfg.BufferLines = 10_000
	}
	cfg.MaxLines = min(cfg.MaxLines, cfg.BufferLines)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// partials has room for every stream, so that pointers into it stay
	// valid while push waits with the lock released.
	return &Batcher{cfg: cfg, send: send, wake: make(chan struct{}, 1), space: make(chan struct{}), partials: make([]partialLine, 0, 8)}
}

// Write splits p into lines of stream s, keeping an unterminated end per
// stream until more bytes or Close complete it. It copies what it keeps, so
// p may be reused after Write returns. Write waits for room at most BlockFor; it
// is safe for concurrent use and has the signature Run's out callback
// needs. Writes after Close are ignored.
func (b *Batcher) Write(s Stream, p []byte) {
	if len(p) == 0 {
		return
	}
	now := b.cfg.Now()

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	before := len(b.queue)
	b.flushOtherPartials(s)
	pl := b.partial(s)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		// Split only once the line is known to exceed MaxLine, so that a
		// line of exactly k*MaxLine bytes gives k pieces, not k+1.
		for len(pl.data)+len(chunk) > b.cfg.MaxLine {
			if len(pl.data) == 0 {
				pl.time = now
			}
			k := b.cfg.MaxLine - len(pl.data)
			pl.data = append(pl.data, chunk[:k]...)
			chunk = chunk[k:]
			b.push(pl.take())
		}
		if len(chunk) > 0 {
			if len(pl.data) == 0 {
				pl.time = now
			}
			pl.data = append(pl.data, chunk...)
		}
		if i < 0 {
			break
		}
		data, t := pl.data, pl.time
		if len(data) == 0 {
			data, t = []byte{}, now
		}
		pl.data, pl.since = nil, time.Time{}
		b.push(Line{Stream: s, Data: data, Time: t})
		p = p[i+1:]
	}
	// A line started and not ended: Run sends it at FlushInterval.
	startedPartial := len(pl.data) > 0 && pl.since.IsZero()
	if startedPartial {
		pl.since = time.Now()
	}
	n := len(b.queue)
	b.mu.Unlock()

	if (before == 0 && n > 0) || n >= b.cfg.MaxLines || startedPartial {
		b.signal()
	}
}

// flushOtherPartials queues the unterminated lines of streams other than
// s as Partial lines, so that output of different streams stays in the
// order it was written in. b.mu must be held.
func (b *Batcher) flushOtherPartials(s Stream) {
	for i := range b.partials {
		if pl := &b.partials[i]; pl.stream != s && len(pl.data) > 0 {
			b.push(pl.take())
		}
	}
}

// take returns pl's data as a Partial line and empties pl (before a push
// that may release b.mu while it waits for room).
func (pl *partialLine) take() Line {
	l := Line{Stream: pl.stream, Data: pl.data, Partial: true, Time: pl.time}
	pl.data, pl.since = nil, time.Time{}
	return l
}

// waitForRoom waits, up to BlockFor, while the queue is full. b.mu must be
// held; it is released while waiting.
func (b *Batcher) waitForRoom() {
	if b.cfg.BlockFor <= 0 || b.overflow {
		return
	}
	var deadline <-chan time.Time
	for len(b.queue) >= b.cfg.BufferLines && !b.closed {
		if deadline == nil {
			t := time.NewTimer(b.cfg.BlockFor)
			defer t.Stop()
			deadline = t.C
		}
		space := b.space
		b.mu.Unlock()
		b.signal()
		select {
		case <-space:
			b.mu.Lock()
		case <-deadline:
			b.mu.Lock()
			b.overflow = true
			return
		}
	}
}

// partial returns the partial line of stream s. b.mu must be held.
func (b *Batcher) partial(s Stream) *partialLine {
	for i := range b.partials {
		if b.partials[i].stream == s {
			return &b.partials[i]
		}
	}
	b.partials = append(b.partials, partialLine{stream: s})
	return &b.partials[len(b.partials)-1]
}

// push appends l to the queue. If the queue is full it first waits for
// room (BlockFor), then drops the oldest queued line. b.mu must be held; it
// may be released while waiting, so callers keep no pointers into b across
// push except into partials, which never reallocates (see NewBatcher).
func (b *Batcher) push(l Line) {
	if len(b.queue) >= b.cfg.BufferLines {
		b.waitForRoom()
	}
	b.enqueue(l)
}

// enqueue appends l to the queue, dropping the oldest queued line if it
// is full. b.mu must be held.
func (b *Batcher) enqueue(l Line) {
	if len(b.queue) >= b.cfg.BufferLines {
		b.queue[0] = Line{}
		b.queue = b.queue[1:]
		b.dropped++
		b.droppedN++
	}
	if len(b.queue) == 0 {
		b.queuedAt = time.Now()
	}
	b.queue = append(b.queue, l)
}

func (b *Batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Close ends the input: unterminated lines are queued with Partial set,
// later Writes are ignored, and Run returns nil once everything queued has
// been sent. Close does not wait for that. It may be called more than once.
func (b *Batcher) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true // first: push must not wait for room from here on
	for i := range b.partials {
		if pl := &b.partials[i]; len(pl.data) > 0 {
			b.push(pl.take())
		}
	}
	b.mu.Unlock()
	b.signal()
}

// Stats returns the number of lines sent successfully and the number of
// lines dropped so far.
func (b *Batcher) Stats() (sent, dropped int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sentN, b.droppedN
}

const (
	retryMin = 100 * time.Millisecond
	retryMax = 2 * time.Second
)

// Run sends batches until ctx is done, returning ctx.Err(), or until Close
// has been called and every queued line has been sent, returning nil.
//
// A batch is sent when MaxLines lines are queued, when FlushInterval has
// passed since the queue became non-empty, or after Close. If send fails the
// same batch is retried after 100ms, doubling up to 2s, until it succeeds or
// ctx is done; lines queued meanwhile wait (or are dropped if the buffer
// fills up). Run must not be called more than once.
func (b *Batcher) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, ok, done, wait := b.next()
		if done {
			return nil
		}
		if ok {
			if err := b.sendRetry(ctx, batch); err != nil {
				return err
			}
			continue
		}
		var timeout <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			timeout = timer.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.wake:
		case <-timeout:
		}
		timer.Stop() // since Go 1.23 no stale tick survives Stop or Reset
	}
}

// next takes the next batch if one is ready. Otherwise it reports whether
// Run is done, or how long to wait for the flush interval (0: until woken).
func (b *Batcher) next() (batch Batch, ok, done bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) < b.cfg.MaxLines && !b.closed {
		wait = b.flushPartials()
	}
	n := len(b.queue)
	if n == 0 {
		return Batch{}, false, b.closed, wait
	}
	if n < b.cfg.MaxLines && !b.closed {
		if qwait := time.Until(b.queuedAt.Add(b.cfg.FlushInterval)); qwait > 0 {
			if wait == 0 || qwait < wait {
				wait = qwait
			}
			return Batch{}, false, false, wait
		}
	}
	k := min(n, b.cfg.MaxLines)
	lines := make([]Line, k)
	copy(lines, b.queue)
	clear(b.queue[:k])
	b.queue = b.queue[k:]
	b.seq++
	close(b.space)
	b.space = make(chan struct{})
	if len(b.queue) <= b.cfg.BufferLines/2 {
		b.overflow = false
	}
	batch = Batch{Seq: b.seq, Lines: lines, Dropped: b.dropped}
	b.dropped = 0
	// Lines left over keep the old queuedAt: they have waited since then
	// at most, and go out with the next batch at the latest when the
	// original interval ends.
	return batch, true, false, 0
}

// flushPartials queues, as Partial lines, the unterminated lines that have
// waited FlushInterval for their end, and returns how long until the next
// other one has (0: none waits). The queue is not full (next checks), so
// nothing waits for room here. b.mu must be held.
func (b *Batcher) flushPartials() (wait time.Duration) {
	for i := range b.partials {
		pl := &b.partials[i]
		if len(pl.data) == 0 {
			continue
		}
		if w := time.Until(pl.since.Add(b.cfg.FlushInterval)); w > 0 {
			if wait == 0 || w < wait {
				wait = w
			}
			continue
		}
		empty, since := len(b.queue) == 0, pl.since
		b.enqueue(pl.take())
		if empty { // the line has waited since then: it is due now
			b.queuedAt = since
		}
	}
	return wait
}

// sendRetry sends batch until it succeeds or ctx is done.
func (b *Batcher) sendRetry(ctx context.Context, batch Batch) error {
	backoff := retryMin
	for {
		err := b.send(ctx, batch)
		if err == nil {
			b.mu.Lock()
			b.sentN += int64(len(batch.Lines))
			b.mu.Unlock()
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, retryMax)
	}
}
