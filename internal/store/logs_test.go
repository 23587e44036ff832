package store_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// runningJob opens a store with cfg (closed when the test ends) and
// claims one new job for a connected worker.
func runningJob(t *testing.T, cfg store.Config) (*store.Store, []store.Assignment) {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, _, err := s.CreateJob(ctx, job.Spec{Command: []string{"true"}}, 1); err != nil {
		t.Fatal(err)
	}
	w := storetest.ConnectedWorker(t, s)
	as, err := s.Claim(ctx, store.WorkerMatch{ID: w}, 1)
	if err != nil || len(as) != 1 {
		t.Fatalf("claim: %v %v", as, err)
	}
	return s, as
}

// TestLogCapTruncatesWithAMarker: past the per-job cap, one truncation
// marker is stored and later batches are dropped (but accepted).
func TestLogCapTruncatesWithAMarker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, as := runningJob(t, store.Config{URL: storetest.URL(t), LogCapBytes: 100})
	tok := as[0].Token
	batch := func(seq int64) store.LogBatchIn {
		return store.LogBatchIn{JobID: jid(as[0]), Token: tok, Seq: seq, Lines: 1, Data: []byte(strings.Repeat("x", 40))}
	}
	for seq := int64(1); seq <= 5; seq++ {
		if stale, err := s.AppendLogBatches(ctx, []store.LogBatchIn{batch(seq)}); err != nil || len(stale) > 0 {
			t.Fatalf("batch %d: stale=%v err=%v", seq, stale, err)
		}
	}
	recs, err := s.ReadLogs(ctx, as[0].JobID, 0, store.LogPos{}, store.LogEnd, 100)
	if err != nil {
		t.Fatal(err)
	}
	// 40 + 40 fit in 100; the third is replaced by the marker; 4 and 5 are dropped.
	if len(recs) != 3 || string(recs[0].Data) != strings.Repeat("x", 40) {
		t.Fatalf("stored %d batches, want 2 of output and the marker", len(recs))
	}
	if !strings.Contains(string(recs[2].Data), "log truncated") {
		t.Fatalf("third batch %q is not the truncation marker", recs[2].Data)
	}
}

// TestLogTailStart: the tail of a log that holds at least N bytes starts
// at the right batch; a tail as long as the log is the whole log.
func TestLogTailStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, as := runningJob(t, store.Config{URL: storetest.URL(t)})
	for seq := int64(1); seq <= 10; seq++ { // ten batches of 100 bytes
		b := store.LogBatchIn{JobID: jid(as[0]), Token: as[0].Token, Seq: seq, Lines: 1, Data: []byte(strings.Repeat("y", 100))}
		if stale, err := s.AppendLogBatches(ctx, []store.LogBatchIn{b}); err != nil || len(stale) > 0 {
			t.Fatalf("batch %d: stale=%v err=%v", seq, stale, err)
		}
	}
	for _, tc := range []struct {
		min     int64
		seq     int64
		skipped bool
	}{
		{1, 10, true}, {100, 10, true}, {101, 9, true}, {250, 8, true}, {900, 2, true},
		{1000, 0, false}, {5000, 0, false},
	} {
		attempt, seq, skipped, err := s.LogTailStart(ctx, as[0].JobID, 0, store.LogEnd, tc.min)
		if err != nil {
			t.Fatal(err)
		}
		if skipped != tc.skipped || (skipped && (attempt != 1 || seq != tc.seq)) {
			t.Errorf("tail of %d bytes: attempt %d seq %d skipped %v, want seq %d skipped %v", tc.min, attempt, seq, skipped, tc.seq, tc.skipped)
		}
	}

	// The window before a batch: the tail of what precedes it, read up to it.
	before := store.LogPos{Attempt: 1, Seq: 6}
	for _, tc := range []struct {
		min     int64
		seq     int64
		skipped bool
	}{{250, 3, true}, {400, 2, true}, {500, 0, false}} {
		attempt, seq, skipped, err := s.LogTailStart(ctx, as[0].JobID, 0, before, tc.min)
		if err != nil {
			t.Fatal(err)
		}
		if skipped != tc.skipped || (skipped && (attempt != 1 || seq != tc.seq)) {
			t.Errorf("tail of %d bytes before seq 6: attempt %d seq %d skipped %v, want seq %d skipped %v", tc.min, attempt, seq, skipped, tc.seq, tc.skipped)
		}
	}
	recs, err := s.ReadLogs(ctx, as[0].JobID, 0, store.LogPos{Attempt: 1, Seq: 2}, before, 100)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, r := range recs {
		seqs = append(seqs, r.Seq)
	}
	if want := []int64{3, 4, 5}; !slices.Equal(seqs, want) {
		t.Errorf("batches after seq 2 and before seq 6: %v, want %v", seqs, want)
	}
}
