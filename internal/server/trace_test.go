package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
	"github.com/hodei-dev/hodei/internal/tracing"
	"github.com/hodei-dev/hodei/internal/tracing/tracetest"
)

// TestAttemptsEndedByTheServerHaveARootSpan: an attempt that ends without
// a result from its agent (cancelled before it was assigned or before it
// started, its worker lost, timed out by the reaper, undeliverable) gets
// its trace's root span from the server, with its outcome, exactly once,
// spanning its assignment to its end.
func TestAttemptsEndedByTheServerHaveARootSpan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sink, endpoint := tracetest.Start(t)
	tr, err := tracing.New(ctx, endpoint, "hodei-server")
	if err != nil {
		t.Fatal(err)
	}
	var ahead atomic.Int64 // the store's clock runs this far ahead
	clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	st, err := store.Open(ctx, store.Config{URL: storetest.URL(t), Logger: storetest.Logger(t), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	base, _ := serveAPI(t, st, Config{ReplicaID: "traces", Tracer: tr})
	jobs := hodeiv1connect.NewJobServiceClient(auth.WithBearer(h2c(), newToken(t, st, "admin", 0, auth.Admin)), base, connect.WithGRPC())
	submit := func(spec *hodeiv1.JobSpec) string {
		t.Helper()
		r, err := jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Job.Id
	}
	claim := func(id string) store.Assignment {
		t.Helper()
		as, err := st.Claim(ctx, store.WorkerMatch{ID: storetest.ConnectedWorker(t, st)}, 1)
		if err != nil || len(as) != 1 || as[0].JobID != id {
			t.Fatalf("claim of %s: %v, %v", id, as, err)
		}
		return as[0]
	}
	cancelJob := func(id string) {
		t.Helper()
		if _, err := jobs.CancelJob(ctx, connect.NewRequest(&hodeiv1.CancelJobRequest{Id: id})); err != nil {
			t.Fatal(err)
		}
	}
	echo := &hodeiv1.JobSpec{Command: []string{"echo"}}

	// Each job is submitted and claimed alone: a claim takes the oldest.
	queued := submit(echo)
	cancelJob(queued)

	assigned := submit(echo)
	assignedTo := claim(assigned)
	cancelJob(assigned)

	lost := submit(echo)
	lostOn := claim(lost)
	if _, err := st.WorkerGone(ctx, lostOn.WorkerID, "disconnected", "lease expired", false); err != nil {
		t.Fatal(err)
	}
	// Retrying, it leaves the queue: its attempt 2 never began.
	cancelJob(lost)

	overdue := submit(&hodeiv1.JobSpec{Command: []string{"sleep", "60"}, Timeout: durationpb.New(time.Minute)})
	overdueOn := claim(overdue)
	if err := st.StartAttempt(ctx, uuid.MustParse(overdue), overdueOn.Token); err != nil {
		t.Fatal(err)
	}
	if n, err := st.FailOverdueAttempts(ctx, time.Second); err != nil || n != 0 {
		t.Fatalf("overdue attempts before the timeout: %d, %v; want none", n, err)
	}
	ahead.Store(int64(2 * time.Minute))
	if n, err := st.FailOverdueAttempts(ctx, time.Second); err != nil || n != 1 {
		t.Fatalf("overdue attempts after the timeout: %d, %v; want 1", n, err)
	}

	undelivered := submit(echo)
	undeliveredTo := claim(undelivered)
	if _, err := st.FinishAttempt(ctx, uuid.MustParse(undelivered), undeliveredTo.Token, store.Result{ExitCode: -1, Class: job.FailureWorkerLost, Message: "worker gone before the job was sent"}); err != nil {
		t.Fatal(err)
	}
	cancelJob(undelivered)
	// Cancelling a job that is over already ends nothing.
	if _, err := jobs.CancelJob(ctx, connect.NewRequest(&hodeiv1.CancelJobRequest{Id: assigned})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("second cancel: %v, want failed precondition", err)
	}
	ended := clock()
	if err := tr.Shutdown(ctx); err != nil { // exports what is left
		t.Fatal(err)
	}

	for _, c := range []struct {
		name, id string
		want     root
	}{
		{"cancelled before its assignment", queued, root{"cancelled", "cancelled", "", "server", createdAt(t, st, queued)}},
		{"cancelled before its start", assigned, root{"cancelled", "cancelled", assignedTo.WorkerID, "server", assignedAt(t, st, assigned)}},
		{"worker lost", lost, root{"worker_lost", "retrying", lostOn.WorkerID, "server", assignedAt(t, st, lost)}},
		{"timed out by the reaper", overdue, root{"timeout", "timed_out", overdueOn.WorkerID, "server", assignedAt(t, st, overdue)}},
		{"undeliverable", undelivered, root{"worker_lost", "retrying", undeliveredTo.WorkerID, "server", assignedAt(t, st, undelivered)}},
	} {
		checkRoot(t, sink, c.name, c.id, c.want, ended)
	}
}

// root is what an attempt's root span says.
type root struct {
	Outcome, State, Worker, EndedBy string
	Since                           time.Time
}

// checkRoot checks that attempt 1 of job id, and no other attempt, has
// one root span, as want says, ending by ended, with the attempt's ids and
// the job's submit span under it.
func checkRoot(t *testing.T, sink *tracetest.Sink, name, id string, want root, ended time.Time) {
	t.Helper()
	rs := sink.Named(id, "job attempt")
	if len(rs) != 1 {
		t.Errorf("%s: %d root spans, want 1 (of attempt 1)", name, len(rs))
		return
	}
	sp := rs[0]
	got := root{tracetest.Attr(sp, "hodei.outcome"), tracetest.Attr(sp, "hodei.state"), tracetest.Attr(sp, "hodei.worker_id"), tracetest.Attr(sp, "hodei.ended_by"), time.Unix(0, int64(sp.StartTimeUnixNano))}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s: root span (-want +got):\n%s", name, d)
	}
	if end := time.Unix(0, int64(sp.EndTimeUnixNano)); end.Before(got.Since) || end.After(ended) {
		t.Errorf("%s: root span ends at %v, want between its start %v and %v", name, end, got.Since, ended)
	}
	if len(sp.ParentSpanId) != 0 {
		t.Errorf("%s: root span has a parent %x", name, sp.ParentSpanId)
	}
	tid, sid := attemptIDs(id, 1)
	if string(sp.TraceId) != string(tid) || string(sp.SpanId) != string(sid) {
		t.Errorf("%s: root span %x/%x, want the attempt's %x/%x", name, sp.TraceId, sp.SpanId, tid, sid)
	}
	if sub := sink.Named(id, "submit"); len(sub) != 1 || string(sub[0].ParentSpanId) != string(sp.SpanId) {
		t.Errorf("%s: submit spans %v, want one under the root span", name, sub)
	}
}

// attemptIDs are the trace and root span ids of attempt n of job id, as
// a traceparent carries them.
func attemptIDs(id string, n int) ([]byte, []byte) {
	sc := trace.SpanContextFromContext(tracing.Attempt(context.Background(), id, n))
	tid, sid := sc.TraceID(), sc.SpanID()
	return tid[:], sid[:]
}

func createdAt(t *testing.T, st *store.Store, id string) time.Time {
	t.Helper()
	j, err := st.GetJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j.CreatedAt
}

func assignedAt(t *testing.T, st *store.Store, id string) time.Time {
	t.Helper()
	j, err := st.GetJob(context.Background(), id)
	if err != nil || len(j.Attempts) == 0 {
		t.Fatalf("job %s: %v attempts, %v", id, len(j.Attempts), err)
	}
	return j.Attempts[0].AssignedAt
}
