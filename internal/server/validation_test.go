package server

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestProviderSettingsThroughTheAPI: bad settings are refused naming
// their field and change nothing; good ones are stored and shown with
// the provider's health and its live workers.
func TestProviderSettingsThroughTheAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.Open(t)
	base, _ := apiServer(t, st)
	c := hodeiv1connect.NewProviderServiceClient(auth.WithBearer(h2c(), newToken(t, st, "admin", 0, auth.Admin)), base, connect.WithGRPC())
	if err := st.SeedProvider(ctx, store.Provider{Name: "local", Kind: "process", MaxWorkers: 2, IdleTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	get := func() *hodeiv1.Provider {
		t.Helper()
		r, err := c.GetProvider(ctx, connect.NewRequest(&hodeiv1.GetProviderRequest{Name: "local"}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Provider
	}
	update := func(m *hodeiv1.UpdateProviderRequest) error {
		m.Name = "local"
		_, err := c.UpdateProvider(ctx, connect.NewRequest(m))
		return err
	}
	n := func(v int32) *int32 { return &v }
	refused(t, update(&hodeiv1.UpdateProviderRequest{MaxWorkers: n(-1)}), connect.CodeInvalidArgument, "max_workers")
	refused(t, update(&hodeiv1.UpdateProviderRequest{MaxWorkers: n(10001)}), connect.CodeInvalidArgument, "max_workers")
	refused(t, update(&hodeiv1.UpdateProviderRequest{IdleTimeout: durationpb.New(-time.Second)}), connect.CodeInvalidArgument, "idle_timeout")
	if p := get(); p.MaxWorkers != 2 || p.IdleTimeout.AsDuration() != time.Minute || !p.Enabled {
		t.Errorf("after refused updates: %v, want it unchanged", p)
	}
	_, err := c.UpdateProvider(ctx, connect.NewRequest(&hodeiv1.UpdateProviderRequest{Name: "nowhere", MaxWorkers: n(1)}))
	refused(t, err, connect.CodeNotFound, "nowhere")

	off, eph := false, true
	if err := update(&hodeiv1.UpdateProviderRequest{Enabled: &off, MaxWorkers: n(5), IdleTimeout: durationpb.New(30 * time.Second), Ephemeral: &eph}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetProviderHealth(ctx, "local", false, "fork failed", time.Now()); err != nil {
		t.Fatal(err)
	}
	id, token, err := st.NewWorker(ctx, "local", "", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := st.Enroll(ctx, store.Enrollment{Token: token, Hostname: "h", Version: "test", Slots: 2}); err != nil {
		t.Fatal(err)
	}
	p := get()
	if p.Enabled || p.MaxWorkers != 5 || p.IdleTimeout.AsDuration() != 30*time.Second || !p.Ephemeral || p.Healthy ||
		p.HealthMessage != "fork failed" || p.UnhealthySince == nil || p.Workers != 1 {
		t.Errorf("after the update: %v", p)
	}
	l, err := c.ListProviders(ctx, connect.NewRequest(&hodeiv1.ListProvidersRequest{}))
	if err != nil || len(l.Msg.Providers) != 1 || l.Msg.Providers[0].Workers != 1 {
		t.Errorf("providers: %v, %v; want local with its worker", l, err)
	}
	ws, err := c.ListWorkers(ctx, connect.NewRequest(&hodeiv1.ListWorkersRequest{Provider: "local"}))
	if err != nil || len(ws.Msg.Workers) != 1 || ws.Msg.Workers[0].Id != id || ws.Msg.Workers[0].Slots != 2 || ws.Msg.Workers[0].Hostname != "h" {
		t.Errorf("workers of local: %v, %v; want %s", ws, err, id)
	}
}

// TestJobQueriesRefuseBadInput: a batch with one bad spec is refused,
// naming it, and stores none; bad list filters, page tokens and log
// positions are refused naming their field; the creation-time filters
// bound the list.
func TestJobQueriesRefuseBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.Open(t)
	base, _ := apiServer(t, st)
	c := hodeiv1connect.NewJobServiceClient(auth.WithBearer(h2c(), newToken(t, st, "admin", 0, auth.Admin)), base, connect.WithGRPC())
	list := func(m *hodeiv1.ListJobsRequest) ([]*hodeiv1.Job, error) {
		r, err := c.ListJobs(ctx, connect.NewRequest(m))
		if err != nil {
			return nil, err
		}
		return r.Msg.Jobs, nil
	}
	_, err := c.SubmitJobs(ctx, connect.NewRequest(&hodeiv1.SubmitJobsRequest{Specs: []*hodeiv1.JobSpec{{Command: []string{"true"}}, {}}}))
	refused(t, err, connect.CodeInvalidArgument, "specs[1].command")
	if jobs, err := list(&hodeiv1.ListJobsRequest{}); err != nil || len(jobs) != 0 {
		t.Errorf("jobs after a refused batch: %d, %v; want none", len(jobs), err)
	}
	r, err := c.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: &hodeiv1.JobSpec{Command: []string{"true"}}}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = list(&hodeiv1.ListJobsRequest{States: []hodeiv1.JobState{hodeiv1.JobState_JOB_STATE_UNSPECIFIED}})
	refused(t, err, connect.CodeInvalidArgument, "states")
	_, err = list(&hodeiv1.ListJobsRequest{PageToken: "not a token"})
	refused(t, err, connect.CodeInvalidArgument, "page_token")
	soon := timestamppb.New(time.Now().Add(time.Hour))
	if jobs, err := list(&hodeiv1.ListJobsRequest{CreatedAfter: soon}); err != nil || len(jobs) != 0 {
		t.Errorf("jobs created in the next hour: %d, %v; want none", len(jobs), err)
	}
	if jobs, err := list(&hodeiv1.ListJobsRequest{CreatedBefore: soon, CreatedAfter: timestamppb.New(time.Now().Add(-time.Hour))}); err != nil || len(jobs) != 1 {
		t.Errorf("jobs of the last hour: %d, %v; want 1", len(jobs), err)
	}
	logs, err := c.GetJobLogs(ctx, connect.NewRequest(&hodeiv1.GetJobLogsRequest{Id: r.Msg.Job.Id, TailBytes: -1}))
	if err != nil {
		t.Fatal(err)
	}
	for logs.Receive() {
	}
	refused(t, logs.Err(), connect.CodeInvalidArgument, "tail_bytes")
	w, err := c.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: uuid.NewString()}))
	if err != nil {
		t.Fatal(err)
	}
	for w.Receive() {
	}
	refused(t, w.Err(), connect.CodeNotFound, "not found")
}

// TestLogsShowLinesTheAgentDropped: a batch that says the agent dropped
// lines reads back with a system line counting them.
func TestLogsShowLinesTheAgentDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.Open(t)
	base, s := apiServer(t, st)
	c := hodeiv1connect.NewJobServiceClient(auth.WithBearer(h2c(), newToken(t, st, "reader", 0, auth.JobsRead)), base, connect.WithGRPC())
	if _, _, err := st.CreateJob(ctx, job.Spec{Command: []string{"yes"}}, 1); err != nil {
		t.Fatal(err)
	}
	wid := storetest.ConnectedWorker(t, st)
	as, err := st.Claim(ctx, store.WorkerMatch{ID: wid}, 1)
	if err != nil || len(as) != 1 {
		t.Fatalf("claim: %v, %v", as, err)
	}
	conn := &workerConn{id: wid, out: make(chan *hodeiv1.ConnectResponse, 16), done: make(chan struct{}), running: map[int64]string{}}
	if err := s.applyReports(ctx, conn, []*hodeiv1.ConnectRequest{{Msg: &hodeiv1.ConnectRequest_Logs{Logs: &hodeiv1.LogBatch{JobId: as[0].JobID, FencingToken: as[0].Token, Seq: 1,
		Lines: []*hodeiv1.LogLine{{Data: []byte("y"), Stream: hodeiv1.LogStream_LOG_STREAM_STDOUT}}, Dropped: 3}}}}); err != nil {
		t.Fatal(err)
	}
	logs, err := c.GetJobLogs(ctx, connect.NewRequest(&hodeiv1.GetJobLogsRequest{Id: as[0].JobID}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for logs.Receive() {
		for _, ch := range logs.Msg().Chunks {
			got = append(got, ch.Stream.String()+" "+string(ch.Data))
		}
	}
	want := []string{"LOG_STREAM_STDOUT y\n", "LOG_STREAM_SYSTEM 3 log lines dropped by the agent (backpressure)\n"}
	if logs.Err() != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("log chunks %q (%v), want %q", got, logs.Err(), want)
	}
}

// TestWorkerStreamRefusesBadMessages: over TLS an enrollment needs a
// certificate request that parses; a stream must open with a hello whose
// prefetch is in range, and may not send an empty message.
func TestWorkerStreamRefusesBadMessages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := serveTLS(t)
	for _, csr := range [][]byte{nil, []byte("junk")} {
		_, token, err := m.st.NewWorker(ctx, "test", "", nil, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.client(t, nil).Enroll(ctx, connect.NewRequest(&hodeiv1.EnrollRequest{BootstrapToken: token, Slots: 1, Csr: csr}))
		refused(t, err, connect.CodeInvalidArgument, "csr")
	}
	w := m.enroll(t)
	hello := &hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Hello{Hello: &hodeiv1.Hello{WorkerId: w.id, Credential: w.cred}}}
	for _, c := range []struct {
		name string
		msgs []*hodeiv1.ConnectRequest
		want string
	}{
		{"no hello", []*hodeiv1.ConnectRequest{{Msg: &hodeiv1.ConnectRequest_Logs{Logs: &hodeiv1.LogBatch{}}}}, "first message must be hello"},
		{"prefetch", []*hodeiv1.ConnectRequest{{Msg: &hodeiv1.ConnectRequest_Hello{Hello: &hodeiv1.Hello{WorkerId: w.id, Credential: w.cred, Prefetch: 10001}}}}, "hello.prefetch"},
		{"empty message", []*hodeiv1.ConnectRequest{hello, {}}, "message is empty"},
		{"batch in a batch", []*hodeiv1.ConnectRequest{hello, {Msg: &hodeiv1.ConnectRequest_Batch{Batch: &hodeiv1.RequestBatch{Msgs: []*hodeiv1.ConnectRequest{
			{Msg: &hodeiv1.ConnectRequest_Batch{Batch: &hodeiv1.RequestBatch{}}}}}}}}, "a batch inside a batch"},
	} {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		stream := m.client(t, w.cert).Connect(sctx)
		for _, msg := range c.msgs {
			if err := stream.Send(msg); err != nil {
				break
			}
		}
		var err error
		for err == nil {
			_, err = stream.Receive()
		}
		refused(t, err, connect.CodeInvalidArgument, c.want)
		stream.CloseRequest()
		cancel()
	}
}
