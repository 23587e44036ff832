package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"
)

// recorder is a send function that records every call.
type recorder struct {
	mu      sync.Mutex
	calls   []Batch       // every call, including failed ones
	batches []Batch       // successful calls
	sent    chan Batch    // gets every call, if non-nil
	gate    chan struct{} // if non-nil, calls block until it is closed
	fail    func() bool   // whether the next call fails; nil: never
}

func (r *recorder) send(ctx context.Context, b Batch) error {
	if r.sent != nil {
		select {
		case r.sent <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, b)
	if r.fail != nil && r.fail() {
		return errors.New("send failed")
	}
	r.batches = append(r.batches, b)
	return nil
}

func (r *recorder) result() (calls, batches []Batch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Batch(nil), r.calls...), append([]Batch(nil), r.batches...)
}

// startRun runs b.Run on a new goroutine and returns its result channel.
func startRun(ctx context.Context, b *Batcher) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	return errc
}

func waitRun(t *testing.T, errc <-chan error) {
	t.Helper()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

// lineNumbers parses lines written as "line N".
func lineNumbers(t *testing.T, lines []Line) []int {
	t.Helper()
	var ns []int
	for _, l := range lines {
		n, err := strconv.Atoi(string(bytes.TrimPrefix(l.Data, []byte("line "))))
		if err != nil || l.Partial {
			t.Fatalf("unexpected line %+v", l)
		}
		ns = append(ns, n)
	}
	return ns
}

func TestBatcherBatchesAllLinesInOrder(t *testing.T) {
	var r recorder
	b := NewBatcher(BatcherConfig{}, r.send)
	errc := startRun(t.Context(), b)

	var all []byte
	for i := 1; i <= 1000; i++ {
		all = fmt.Appendf(all, "line %d\n", i)
	}
	// Write in odd-sized chunks so lines span writes, reusing the buffer
	// to check that the batcher copies.
	buf := make([]byte, 37)
	for p := all; len(p) > 0; {
		n := copy(buf, p)
		b.Write(StreamStdout, buf[:n])
		clear(buf)
		p = p[n:]
	}
	b.Close()
	waitRun(t, errc)

	calls, batches := r.result()
	if len(calls) != len(batches) {
		t.Errorf("%d send calls for %d batches", len(calls), len(batches))
	}
	var lines []Line
	for i, batch := range batches {
		if batch.Seq != int64(i+1) {
			t.Errorf("batch %d has Seq %d", i, batch.Seq)
		}
		if len(batch.Lines) == 0 || len(batch.Lines) > 100 {
			t.Errorf("batch %d has %d lines", batch.Seq, len(batch.Lines))
		}
		if batch.Dropped != 0 {
			t.Errorf("batch %d: Dropped = %d", batch.Seq, batch.Dropped)
		}
		lines = append(lines, batch.Lines...)
	}
	ns := lineNumbers(t, lines)
	for i, n := range ns {
		if n != i+1 {
			t.Fatalf("line %d is %q", i+1, lines[i].Data)
		}
	}
	if len(ns) != 1000 {
		t.Errorf("got %d lines, want 1000", len(ns))
	}
	if sent, dropped := b.Stats(); sent != 1000 || dropped != 0 {
		t.Errorf("Stats() = %d, %d, want 1000, 0", sent, dropped)
	}
}

func TestBatcherFlushInterval(t *testing.T) {
	r := recorder{sent: make(chan Batch)}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	b := NewBatcher(BatcherConfig{FlushInterval: 50 * time.Millisecond}, r.send)
	errc := startRun(ctx, b)

	b.Write(StreamStdout, []byte("a\nb\n"))
	b.Write(StreamStderr, []byte("c\n"))
	expectBatch(t, r.sent, 1, "stdout:a", "stdout:b", "stderr:c")
	// The start of a line goes out after the interval too, before its end.
	b.Write(StreamStderr, []byte("unterminated"))
	expectBatch(t, r.sent, 2, "stderr:unterminated+")
	b.Write(StreamStderr, []byte(" until now\n"))
	expectBatch(t, r.sent, 3, "stderr: until now")

	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// expectBatch receives the next batch and checks its Seq and its lines as
// "stream:data", with "+" appended to Partial lines.
func expectBatch(t *testing.T, sent <-chan Batch, seq int64, want ...string) {
	t.Helper()
	select {
	case batch := <-sent:
		var got []string
		for _, l := range batch.Lines {
			s := fmt.Sprintf("%v:%s", l.Stream, l.Data)
			if l.Partial {
				s += "+"
			}
			got = append(got, s)
		}
		if batch.Seq != seq || !reflect.DeepEqual(got, want) {
			t.Errorf("batch %d = %q, want %d %q", batch.Seq, got, seq, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("batch %d not sent without Close", seq)
	}
}

func TestBatcherSplitsLongLines(t *testing.T) {
	const maxLine = 64 << 10
	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	for i, c := range data {
		if c == '\n' {
			data[i] = 'x'
		}
	}

	for _, terminated := range []bool{true, false} {
		t.Run(fmt.Sprintf("terminated=%v", terminated), func(t *testing.T) {
			var r recorder
			b := NewBatcher(BatcherConfig{MaxLine: maxLine}, r.send)
			errc := startRun(t.Context(), b)
			for p := data; len(p) > 0; p = p[min(len(p), 32<<10):] {
				b.Write(StreamStdout, p[:min(len(p), 32<<10)])
			}
			if terminated {
				b.Write(StreamStdout, []byte("\n"))
			}
			b.Close()
			waitRun(t, errc)

			_, batches := r.result()
			var pieces []Line
			for _, batch := range batches {
				pieces = append(pieces, batch.Lines...)
			}
			if len(pieces) != 16 {
				t.Fatalf("got %d pieces, want 16", len(pieces))
			}
			var joined []byte
			for i, l := range pieces {
				wantPartial := i < 15 || !terminated
				if len(l.Data) != maxLine || l.Partial != wantPartial {
					t.Errorf("piece %d: %d bytes, Partial %v; want %d bytes, Partial %v",
						i, len(l.Data), l.Partial, maxLine, wantPartial)
				}
				joined = append(joined, l.Data...)
			}
			if !bytes.Equal(joined, data) {
				t.Error("pieces do not reassemble to the line")
			}
		})
	}
}

func TestBatcherLineSplitting(t *testing.T) {
	type piece struct {
		S       Stream
		Data    string
		Partial bool
	}
	for _, tc := range []struct {
		name   string
		writes []piece // S and Data of each Write
		want   []piece
	}{
		{
			name:   "exactly MaxLine",
			writes: []piece{{S: 1, Data: "abcd\n"}},
			want:   []piece{{1, "abcd", false}},
		},
		{
			name:   "longer than MaxLine",
			writes: []piece{{S: 1, Data: "abcdefghij\n"}},
			want:   []piece{{1, "abcd", true}, {1, "efgh", true}, {1, "ij", false}},
		},
		{
			name:   "twice MaxLine across writes",
			writes: []piece{{S: 1, Data: "abc"}, {S: 1, Data: "defgh"}, {S: 1, Data: "\n"}},
			want:   []piece{{1, "abcd", true}, {1, "efgh", false}},
		},
		{
			name:   "empty lines",
			writes: []piece{{S: 1, Data: "\n\nx\n"}},
			want:   []piece{{1, "", false}, {1, "", false}, {1, "x", false}},
		},
		{
			name:   "unterminated at Close",
			writes: []piece{{S: 1, Data: "ab\nxy"}},
			want:   []piece{{1, "ab", false}, {1, "xy", true}},
		},
		{
			name: "a write of another stream queues a partial line",
			writes: []piece{
				{S: 1, Data: "o-"}, {S: 2, Data: "e-"}, {S: 1, Data: "1\nout"}, {S: 2, Data: "1\n"},
			},
			want: []piece{{1, "o-", true}, {2, "e-", true}, {1, "1", false}, {1, "out", true}, {2, "1", false}},
		},
		{
			name:   "partial line of the same stream continues",
			writes: []piece{{S: 1, Data: "a"}, {S: 1, Data: "b"}, {S: 1, Data: "\n"}},
			want:   []piece{{1, "ab", false}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			b := NewBatcher(BatcherConfig{MaxLine: 4}, r.send)
			for _, w := range tc.writes {
				b.Write(w.S, []byte(w.Data))
			}
			b.Close()
			b.Write(1, []byte("after close\n"))
			waitRun(t, startRun(t.Context(), b))

			_, batches := r.result()
			var got []piece
			for _, batch := range batches {
				for _, l := range batch.Lines {
					got = append(got, piece{l.Stream, string(l.Data), l.Partial})
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("lines = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestBatcherLineTime(t *testing.T) {
	var (
		mu  sync.Mutex
		now = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	}
	var r recorder
	b := NewBatcher(BatcherConfig{Now: clock}, r.send)
	b.Write(StreamStdout, []byte("a"))   // 00:00:01
	b.Write(StreamStdout, []byte("b\n")) // 00:00:02
	b.Write(StreamStdout, []byte("c\n")) // 00:00:03
	b.Close()
	waitRun(t, startRun(t.Context(), b))

	_, batches := r.result()
	if len(batches) != 1 || len(batches[0].Lines) != 2 {
		t.Fatalf("batches = %+v, want one with two lines", batches)
	}
	for i, want := range []int{1, 3} {
		if got := batches[0].Lines[i].Time.Second(); got != want {
			t.Errorf("line %d: Time at second %d, want %d (its first byte)", i, got, want)
		}
	}
}

func TestBatcherDropsOldestUnderBackpressure(t *testing.T) {
	r := recorder{sent: make(chan Batch), gate: make(chan struct{})}
	b := NewBatcher(BatcherConfig{BufferLines: 100, FlushInterval: time.Hour}, r.send)
	errc := startRun(t.Context(), b)

	write := func(from, to int) {
		for i := from; i <= to; i++ {
			b.Write(StreamStdout, fmt.Appendf(nil, "line %d\n", i))
		}
	}
	// The first 100 lines fill a batch; its send blocks until released.
	write(1, 100)
	var first Batch
	select {
	case first = <-r.sent:
	case <-time.After(10 * time.Second):
		t.Fatal("first batch not sent")
	}
	// Meanwhile 900 more lines arrive for a buffer of 100.
	write(101, 1000)
	if sent, dropped := b.Stats(); sent != 0 || dropped != 800 {
		t.Errorf("Stats() while blocked = %d, %d, want 0, 800", sent, dropped)
	}
	b.Close()
	close(r.gate)
	go func() {
		for range r.sent { // let later sends through
		}
	}()
	waitRun(t, errc)
	close(r.sent)

	_, batches := r.result()
	if len(batches) != 2 || batches[0].Seq != first.Seq {
		t.Fatalf("got %d batches, want 2 starting with Seq %d", len(batches), first.Seq)
	}

	// Invariants that hold whatever the timing: lines arrive in order, each
	// batch's Dropped counts exactly the gap before it, and nothing is lost
	// unaccounted.
	prev, received, droppedSum := 0, 0, int64(0)
	for _, batch := range batches {
		ns := lineNumbers(t, batch.Lines)
		if gap := ns[0] - prev - 1; int64(gap) != batch.Dropped {
			t.Errorf("batch %d: Dropped = %d, but %d lines are missing before it", batch.Seq, batch.Dropped, gap)
		}
		for i := 1; i < len(ns); i++ {
			if ns[i] != ns[i-1]+1 {
				t.Errorf("batch %d: line %d follows line %d", batch.Seq, ns[i], ns[i-1])
			}
		}
		prev = ns[len(ns)-1]
		received += len(ns)
		droppedSum += batch.Dropped
	}
	sent, dropped := b.Stats()
	if int64(received) != sent || droppedSum != dropped || int64(received)+dropped != 1000 {
		t.Errorf("received %d, batches report %d dropped, Stats() = %d, %d; want received+dropped = 1000",
			received, droppedSum, sent, dropped)
	}
	// With this sequencing exactly: the first batch, then the newest 100.
	if got := lineNumbers(t, batches[1].Lines); got[0] != 901 || got[len(got)-1] != 1000 || batches[1].Dropped != 800 {
		t.Errorf("second batch has lines %d..%d, Dropped %d; want 901..1000, 800",
			got[0], got[len(got)-1], batches[1].Dropped)
	}
}

func TestBatcherRetriesSameBatch(t *testing.T) {
	failures := 2
	r := recorder{fail: func() bool { // called with r.mu held
		failures--
		return failures >= 0
	}}
	b := NewBatcher(BatcherConfig{}, r.send)
	errc := startRun(t.Context(), b)
	b.Write(StreamStdout, []byte("line 1\nline 2\n"))
	b.Close()
	waitRun(t, errc)

	calls, batches := r.result()
	if len(calls) != 3 {
		t.Fatalf("%d send calls, want 3 (two failures, one success)", len(calls))
	}
	for i, c := range calls {
		if !reflect.DeepEqual(c, calls[0]) {
			t.Errorf("call %d sent %+v, first call sent %+v", i+1, c, calls[0])
		}
	}
	if len(batches) != 1 || batches[0].Seq != 1 || len(batches[0].Lines) != 2 {
		t.Errorf("successful batches = %+v, want one with Seq 1 and 2 lines", batches)
	}
	if sent, dropped := b.Stats(); sent != 2 || dropped != 0 {
		t.Errorf("Stats() = %d, %d, want 2, 0", sent, dropped)
	}
}

func TestBatcherRunStopsWhileRetrying(t *testing.T) {
	r := recorder{fail: func() bool { return true }}
	ctx, cancel := context.WithCancel(t.Context())
	b := NewBatcher(BatcherConfig{}, r.send)
	errc := startRun(ctx, b)
	b.Write(StreamStdout, []byte("x\n"))
	b.Close()

	// Cancel once the batch has failed at least once.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if calls, _ := r.result(); len(calls) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("send never called")
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-errc:
			t.Fatal("Run returned before cancel")
		}
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if sent, _ := b.Stats(); sent != 0 {
		t.Errorf("sent = %d, want 0", sent)
	}
}

// TestBatcherBlockForSlowsTheWriterInsteadOfDropping: with BlockFor set, a
// full buffer makes Write wait for the sender rather than drop lines.
func TestBatcherBlockForSlowsTheWriterInsteadOfDropping(t *testing.T) {
	r := recorder{gate: make(chan struct{})}
	b := NewBatcher(BatcherConfig{BufferLines: 100, MaxLines: 10, FlushInterval: time.Hour, BlockFor: time.Minute}, r.send)
	errc := startRun(t.Context(), b)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := 1; i <= 1000; i++ {
			b.Write(StreamStdout, fmt.Appendf(nil, "line %d\n", i))
		}
	}()
	// The sender is held: the writer must be blocked, not racing ahead.
	select {
	case <-wrote:
		t.Fatal("1000 lines written into a buffer of 100 while the sender was held")
	case <-time.After(200 * time.Millisecond):
	}
	close(r.gate)
	<-wrote
	b.Close()
	waitRun(t, errc)
	_, batches := r.result()
	var got []int
	for _, batch := range batches {
		got = append(got, lineNumbers(t, batch.Lines)...)
	}
	if sent, dropped := b.Stats(); dropped != 0 || sent != 1000 || len(got) != 1000 || got[999] != 1000 {
		t.Fatalf("sent=%d dropped=%d received=%d, want 1000 sent, none dropped", sent, dropped, len(got))
	}
}

// TestBatcherBlockForIsBounded: once a wait times out, Write drops the
// oldest lines instead of blocking the process forever.
func TestBatcherBlockForIsBounded(t *testing.T) {
	r := recorder{gate: make(chan struct{})}
	b := NewBatcher(BatcherConfig{BufferLines: 100, MaxLines: 10, FlushInterval: time.Hour, BlockFor: 50 * time.Millisecond}, r.send)
	errc := startRun(t.Context(), b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 1000; i++ {
			b.Write(StreamStdout, fmt.Appendf(nil, "line %d\n", i))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked far past BlockFor")
	}
	if _, dropped := b.Stats(); dropped == 0 {
		t.Error("no line dropped although the sender was held")
	}
	close(r.gate)
	b.Close()
	waitRun(t, errc)
}
