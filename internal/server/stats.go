package server

import (
	"context"
	"encoding/hex"
	"math/bits"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
)

// statsTypes are the events the rolling counters count; the replica's
// event feed reads them anyway, and only JobFailed and
// JobQueueDepthChanged are decoded.
var statsTypes = []string{"JobCreated", "JobAssigned", "JobCompleted", "JobFailed", "JobCancelled", "JobQueueDepthChanged"}

const (
	statsMinutes = 60
	latBuckets   = 24 // power-of-two milliseconds: <1, <2, <4, ... <2^23
)

// statMinute is one minute of the rolling counters.
type statMinute struct {
	start                                             int64 // unix minute
	created, succeeded, failed, cancelled, dispatched int64
	queued                                            int64 // last depth published, -1 none
	latency                                           [latBuckets]int64
}

// jobStats counts job events per minute over the last hour. Every
// replica counts every replica's events, from its own start.
type jobStats struct {
	since time.Time
	mu    sync.Mutex
	ring  [statsMinutes]statMinute
}

func newJobStats(now time.Time) *jobStats { return &jobStats{since: now} }

// minute returns the slot of t's minute, cleared if it held an older one.
func (s *jobStats) minute(t time.Time) *statMinute {
	m := t.Unix() / 60
	slot := &s.ring[m%statsMinutes]
	if slot.start != m {
		*slot = statMinute{start: m, queued: -1}
	}
	return slot
}

// add counts one event. A lazy tail hands it undecoded; the two types
// whose payload matters are decoded here (one that does not decode is
// not counted: counters must never stop the tail).
func (s *jobStats) add(e eventbus.Event) {
	var failedFinal bool
	var depth int64 = -1
	switch e.Type {
	case "JobFailed", "JobQueueDepthChanged":
		p, err := e.Decode()
		if err != nil {
			return
		}
		failedFinal = p.GetJobFailed().GetFinal()
		if d := p.GetJobQueueDepthChanged(); d != nil {
			depth = d.GetQueued()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.minute(e.Time)
	switch e.Type {
	case "JobCreated":
		m.created++
	case "JobAssigned":
		m.dispatched++
		if created, ok := uuidV7Time(e.AggregateID); ok {
			ms := max(e.Time.Sub(created).Milliseconds(), 0)
			m.latency[min(bits.Len64(uint64(ms)), latBuckets-1)]++
		}
	case "JobCompleted":
		m.succeeded++
	case "JobFailed":
		if failedFinal {
			m.failed++
		}
	case "JobCancelled":
		m.cancelled++
	case "JobQueueDepthChanged":
		m.queued = depth
	}
}

// snapshot returns the minutes of the last hour up to now, oldest first.
func (s *jobStats) snapshot(now time.Time) []*hodeiv1.JobStatsMinute {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := now.Unix() / 60
	out := make([]*hodeiv1.JobStatsMinute, 0, statsMinutes)
	for m := cur - statsMinutes + 1; m <= cur; m++ {
		if time.Unix(m*60+59, 0).Before(s.since) {
			continue
		}
		pm := &hodeiv1.JobStatsMinute{Start: timestamppb.New(time.Unix(m*60, 0)), Queued: -1}
		if slot := s.ring[m%statsMinutes]; slot.start == m {
			pm.Created, pm.Succeeded, pm.Failed, pm.Cancelled = slot.created, slot.succeeded, slot.failed, slot.cancelled
			pm.Dispatched, pm.Queued = slot.dispatched, slot.queued
			pm.DispatchP50Ms, pm.DispatchP99Ms = quantile(slot.latency, 0.5), quantile(slot.latency, 0.99)
		}
		out = append(out, pm)
	}
	return out
}

// quantile is the upper bound, in ms, of the bucket that holds quantile q.
func quantile(h [latBuckets]int64, q float64) float64 {
	var n int64
	for _, c := range h {
		n += c
	}
	if n == 0 {
		return 0
	}
	rank := int64(q*float64(n-1)) + 1
	for i, c := range h {
		if rank -= c; rank <= 0 {
			return float64(uint64(1) << i)
		}
	}
	return float64(uint64(1) << (latBuckets - 1))
}

// uuidV7Time is the creation time a UUIDv7 carries in its first 48 bits.
func uuidV7Time(id string) (time.Time, bool) {
	h := strings.ReplaceAll(id, "-", "")
	if len(h) != 32 || h[12] != '7' {
		return time.Time{}, false
	}
	var b [8]byte
	if _, err := hex.Decode(b[2:], []byte(h[:12])); err != nil {
		return time.Time{}, false
	}
	var ms int64
	for _, x := range b {
		ms = ms<<8 | int64(x)
	}
	return time.UnixMilli(ms), true
}

func (h jobService) GetJobStats(ctx context.Context, req *connect.Request[hodeiv1.GetJobStatsRequest]) (*connect.Response[hodeiv1.GetJobStatsResponse], error) {
	counts, err := h.s.store.CountActiveJobs(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.GetJobStatsResponse{Minutes: h.s.stats.snapshot(time.Now()), Queued: counts["queued"],
		Retrying: counts["retrying"], Running: counts["running"] + counts["assigned"], Since: timestamppb.New(h.s.stats.since)}), nil
}
