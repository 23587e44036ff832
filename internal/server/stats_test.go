package server

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
)

func TestJobStatsCountsPerMinute(t *testing.T) {
	id := "01a24365-71cf-77e0-bb71-5416c1778aea" // a UUIDv7 of 2026-12-04T23:30:51.471Z
	created, ok := uuidV7Time(id)
	if want := time.Date(2026, 12, 4, 23, 30, 51, 471e6, time.UTC); !ok || !created.Equal(want) {
		t.Fatalf("uuidV7Time(%s) = %v, %v; want %v", id, created, ok, want)
	}
	start := created.Truncate(time.Minute)
	s := newJobStats(start)
	ev := func(typ string, at time.Time, p *hodeiv1.EventPayload) eventbus.Event {
		return eventbus.Event{Type: typ, AggregateID: id, Time: at, Payload: p}
	}
	s.add(ev("JobCreated", start.Add(10*time.Second), nil))
	s.add(ev("JobCreated", start.Add(20*time.Second), nil))
	s.add(ev("JobAssigned", created.Add(3*time.Millisecond), nil)) // 3 ms after submission: the <4 ms bucket
	s.add(ev("JobCompleted", start.Add(70*time.Second), nil))
	s.add(ev("JobFailed", start.Add(80*time.Second), &hodeiv1.EventPayload{Kind: &hodeiv1.EventPayload_JobFailed{JobFailed: &hodeiv1.JobFailed{Final: true}}}))
	s.add(ev("JobFailed", start.Add(81*time.Second), &hodeiv1.EventPayload{Kind: &hodeiv1.EventPayload_JobFailed{JobFailed: &hodeiv1.JobFailed{Final: false}}}))
	s.add(ev("JobQueueDepthChanged", start.Add(90*time.Second), &hodeiv1.EventPayload{Kind: &hodeiv1.EventPayload_JobQueueDepthChanged{JobQueueDepthChanged: &hodeiv1.JobQueueDepthChanged{Queued: 7}}}))

	got := s.snapshot(start.Add(90 * time.Second))
	type row struct{ Created, Succeeded, Failed, Dispatched, Queued int64 }
	var rows []row
	for _, m := range got {
		rows = append(rows, row{m.Created, m.Succeeded, m.Failed, m.Dispatched, m.Queued})
	}
	if diff := cmp.Diff([]row{{2, 0, 0, 1, -1}, {0, 1, 1, 0, 7}}, rows); diff != "" {
		t.Errorf("minutes since the start (-want +got):\n%s", diff)
	}
	if got[0].DispatchP50Ms != 4 {
		t.Errorf("dispatch p50 %v ms, want the <4 ms bucket", got[0].DispatchP50Ms)
	}
	// An hour later the ring has moved on: the old minutes are gone.
	later := s.snapshot(start.Add(2 * time.Hour))
	if len(later) != statsMinutes {
		t.Fatalf("%d minutes an hour on, want %d", len(later), statsMinutes)
	}
	for _, m := range later {
		if m.Created != 0 || m.Succeeded != 0 {
			t.Fatalf("a minute of two hours ago counted in the last hour: %v", m)
		}
	}
}

func TestQuantile(t *testing.T) {
	var h [latBuckets]int64
	h[1], h[3], h[10] = 90, 9, 1 // <2 ms, <8 ms, <1024 ms
	if q := quantile(h, 0.5); q != 2 {
		t.Errorf("p50 %v, want 2", q)
	}
	if q := quantile(h, 0.99); q != 8 {
		t.Errorf("p99 %v, want 8", q)
	}
	if q := quantile(h, 1); q != 1024 {
		t.Errorf("max %v, want 1024", q)
	}
}
