package server

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// procedures lists every procedure of every service of hodei.v1, from the
// generated descriptors: a new RPC is in it without anyone adding it.
func procedures(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	var out []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage("hodei.v1", func(f protoreflect.FileDescriptor) bool {
		for i := 0; i < f.Services().Len(); i++ {
			svc := f.Services().Get(i)
			for j := 0; j < svc.Methods().Len(); j++ {
				out = append(out, svc.Methods().Get(j))
			}
		}
		return true
	})
	names := make([]string, len(out))
	for i, m := range out {
		names[i] = procedureName(m)
	}
	for _, p := range []string{hodeiv1connect.JobServiceSubmitJobProcedure, hodeiv1connect.TokenServiceCreateTokenProcedure, hodeiv1connect.WorkerServiceConnectProcedure} {
		if !slices.Contains(names, p) {
			t.Fatalf("%s is not among the %d procedures found in hodei.v1", p, len(out))
		}
	}
	return out
}

func procedureName(m protoreflect.MethodDescriptor) string {
	return "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
}

// TestEveryProcedureHasAScope: every procedure but the worker stream's
// needs a scope, and the table names no procedure that does not exist.
func TestEveryProcedureHasAScope(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range procedures(t) {
		name := procedureName(m)
		seen[name] = true
		if TokenFree(string(m.Parent().FullName())) {
			continue
		}
		if _, ok := ProcedureScope(name); !ok {
			t.Errorf("%s needs no scope: add it to procedureScopes", name)
		}
	}
	for p := range procedureScopes {
		if !seen[p] {
			t.Errorf("procedureScopes names %s, which is no procedure", p)
		}
	}
}

// wantScope is what the security model says each procedure needs,
// written independently of procedureScopes: submitting, cancelling and
// retrying jobs need jobs:write; reading jobs, their logs and events
// jobs:read; everything else (providers, job types, webhooks, tokens,
// dead letters) admin.
func wantScope(m protoreflect.MethodDescriptor) auth.Scope {
	svc, name := string(m.Parent().Name()), string(m.Name())
	switch {
	case svc == "JobService" && slices.Contains([]string{"SubmitJob", "SubmitJobs", "CancelJob", "RetryJob"}, name):
		return auth.JobsWrite
	case svc == "JobService":
		return auth.JobsRead
	case svc == "EventService" && name == "Subscribe":
		return auth.JobsRead
	}
	return auth.Admin
}

// apiServer serves a Server on a fresh database on loopback until the
// test ends.
func apiServer(t *testing.T, st *store.Store) (base string, s *Server) {
	t.Helper()
	return serveAPI(t, st, Config{ReplicaID: "auth-" + t.Name()})
}

// serveAPI serves a Server of cfg (with a registry and the test's
// logger) on st on loopback until the test ends.
func serveAPI(t *testing.T, st *store.Store, cfg Config) (base string, s *Server) {
	t.Helper()
	bus := st.NewBus(eventbus.Config{Logger: storetest.Logger(t)})
	cfg.Registry, cfg.Logger = prometheus.NewRegistry(), storetest.Logger(t)
	s, err := New(cfg, st, bus)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- bus.Run(ctx) }()
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
	})
	return "http://" + ln.Addr().String(), s
}

func newToken(t *testing.T, st *store.Store, name string, ttl time.Duration, scopes ...auth.Scope) string {
	t.Helper()
	names := make([]string, len(scopes))
	for i, s := range scopes {
		names[i] = string(s)
	}
	_, secret, err := st.CreateToken(context.Background(), name, names, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// call calls procedure m with an empty request and token ("" for none),
// and says how the server answered: "unauthenticated", "denied" or
// "allowed" (the call got past the check: whatever the handler made of
// the empty request).
func call(t *testing.T, base string, m protoreflect.MethodDescriptor, token string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	c := connect.NewClient[emptypb.Empty, emptypb.Empty](h2c(), base+procedureName(m), connect.WithGRPC())
	req := connect.NewRequest(&emptypb.Empty{})
	if token != "" {
		req.Header().Set("Authorization", "Bearer "+token)
	}
	var err error
	if m.IsStreamingServer() {
		var s *connect.ServerStreamForClient[emptypb.Empty]
		if s, err = c.CallServerStream(ctx, req); err == nil {
			s.Receive() // a stream that follows (Subscribe) ends with the deadline: allowed
			err = s.Err()
			s.Close()
		}
	} else {
		_, err = c.CallUnary(ctx, req)
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated:
		return "unauthenticated"
	case connect.CodePermissionDenied:
		return "denied"
	}
	return "allowed"
}

// TestEachScopeAllowsExactlyItsProcedures calls every procedure of every
// service with a token of each scope, with none and with a bad one.
func TestEachScopeAllowsExactlyItsProcedures(t *testing.T) {
	st := storetest.Open(t)
	base, _ := apiServer(t, st)
	tokens := map[auth.Scope]string{}
	for _, s := range auth.Scopes {
		tokens[s] = newToken(t, st, strings.ReplaceAll(string(s), ":", "-"), 0, s)
	}
	bad, _ := auth.NewSecret()
	for _, m := range procedures(t) {
		if TokenFree(string(m.Parent().FullName())) {
			continue
		}
		name := procedureName(m)
		for _, s := range auth.Scopes {
			want := "denied"
			if auth.Allows([]auth.Scope{s}, wantScope(m)) {
				want = "allowed"
			}
			if got := call(t, base, m, tokens[s]); got != want {
				t.Errorf("%s with a %s token: %s, want %s", name, s, got, want)
			}
		}
		for what, tok := range map[string]string{"no token": "", "an unknown token": bad, "garbage": "not-a-token"} {
			if got := call(t, base, m, tok); got != "unauthenticated" {
				t.Errorf("%s with %s: %s, want unauthenticated", name, what, got)
			}
		}
	}
}

func getJobCall(t *testing.T, base, token string) error {
	t.Helper()
	c := hodeiv1connect.NewJobServiceClient(auth.WithBearer(h2c(), token), base, connect.WithGRPC())
	_, err := c.ListJobs(context.Background(), connect.NewRequest(&hodeiv1.ListJobsRequest{}))
	return err
}

// TestExpiredTokenIsRefused: a token is refused from its expiry on, also
// while the replica has it cached.
func TestExpiredTokenIsRefused(t *testing.T) {
	st := storetest.Open(t)
	base, s := apiServer(t, st)
	tok := newToken(t, st, "short", time.Hour, auth.JobsRead)
	if err := getJobCall(t, base, tok); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	s.tokens.now = func() time.Time { return time.Now().Add(time.Hour + time.Second) }
	if err := getJobCall(t, base, tok); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("expired token (cached): %v, want unauthenticated", err)
	}
	s.tokens.invalidate("")
	if err := getJobCall(t, base, tok); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("expired token (read from the store): %v, want unauthenticated", err)
	}
}

// TestRevokeOnOneReplicaIsEffectiveOnAnother: a token cached by replica B
// and revoked through replica A is refused by B as soon as the revoke's
// NOTIFY arrives: well before the cache's own recheck (tokenRecheck, a
// minute). The bound is revokeReach, loose enough for a loaded machine.
func TestRevokeOnOneReplicaIsEffectiveOnAnother(t *testing.T) {
	const revokeReach = 10 * time.Second
	if revokeReach >= tokenRecheck {
		t.Fatal("revokeReach must stay under tokenRecheck, or the recheck alone would pass this test")
	}
	url := storetest.URL(t)
	open := func() *store.Store {
		st, err := store.Open(context.Background(), store.Config{URL: url, Logger: storetest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return st
	}
	stA, stB := open(), open()
	a, _ := apiServer(t, stA)
	b, _ := apiServer(t, stB)
	admin := newToken(t, stA, "admin", 0, auth.Admin)
	victim := newToken(t, stA, "victim", 0, auth.JobsRead)
	if err := getJobCall(t, b, victim); err != nil {
		t.Fatalf("before the revoke, on B: %v", err)
	}
	// A stream the token opened on B before the revoke ends with it: a
	// watch of a job that stays queued (no workers).
	queued, _, err := stA.CreateJob(context.Background(), job.Spec{Command: []string{"true"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	jobs := hodeiv1connect.NewJobServiceClient(auth.WithBearer(h2c(), victim), b, connect.WithGRPC())
	stream, err := jobs.WatchJob(t.Context(), connect.NewRequest(&hodeiv1.WatchJobRequest{Id: queued.ID}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("watch before the revoke: %v", stream.Err())
	}
	streamEnd := make(chan error, 1)
	go func() {
		for stream.Receive() {
		}
		streamEnd <- stream.Err()
	}()
	tokens := hodeiv1connect.NewTokenServiceClient(auth.WithBearer(h2c(), admin), a, connect.WithGRPC())
	if _, err := tokens.RevokeToken(context.Background(), connect.NewRequest(&hodeiv1.RevokeTokenRequest{Token: "victim"})); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for {
		err := getJobCall(t, b, victim)
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			t.Logf("B refuses the token %s after its revoke on A", time.Since(revoked).Round(time.Millisecond))
			break
		}
		if time.Since(revoked) > revokeReach {
			t.Fatalf("B still accepts the token %s after its revoke on A (%v)", revokeReach, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := getJobCall(t, a, victim); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("A after the revoke: %v, want unauthenticated", err)
	}
	select {
	case err := <-streamEnd:
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("the stream opened before the revoke ended with %v, want unauthenticated", err)
		}
	case <-time.After(revokeReach):
		t.Errorf("the stream opened before the revoke still runs %s after it", revokeReach)
	}
	types := eventTypesOf(t, stA, "token")
	if !slices.Contains(types, "TokenCreated") || !slices.Contains(types, "TokenRevoked") {
		t.Errorf("token events %v, want TokenCreated and TokenRevoked", types)
	}
}

func eventTypesOf(t *testing.T, st *store.Store, kind string) []string {
	t.Helper()
	rows, err := st.SQLForTests().Query(context.Background(), "SELECT type FROM events WHERE aggregate_kind = $1 ORDER BY id", kind)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestMetricsNeedTheMetricsScope: /metrics answers 401 without a token,
// 403 to a token without the metrics scope, 200 to metrics and admin
// tokens; /healthz and /readyz need none.
func TestMetricsNeedTheMetricsScope(t *testing.T) {
	st := storetest.Open(t)
	base, _ := apiServer(t, st)
	get := func(path, token string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := h2c().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", newToken(t, st, "reader", 0, auth.JobsWrite), http.StatusForbidden},
		{"/metrics", newToken(t, st, "scraper", 0, auth.Metrics), http.StatusOK},
		{"/metrics", newToken(t, st, "root", 0, auth.Admin), http.StatusOK},
		{"/healthz", "", http.StatusOK},
		{"/readyz", "", http.StatusOK},
	} {
		if got := get(tc.path, tc.token); got != tc.want {
			t.Errorf("GET %s (token %t): %d, want %d", tc.path, tc.token != "", got, tc.want)
		}
	}
}

// TestJobRecordsItsSubmitter: a job names the token that submitted it.
func TestJobRecordsItsSubmitter(t *testing.T) {
	st := storetest.Open(t)
	base, _ := apiServer(t, st)
	c := hodeiv1connect.NewJobServiceClient(auth.WithBearer(h2c(), newToken(t, st, "ci-bot", 0, auth.JobsWrite)), base, connect.WithGRPC())
	r, err := c.SubmitJob(context.Background(), connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: &hodeiv1.JobSpec{Command: []string{"true"}}}))
	if err != nil {
		t.Fatal(err)
	}
	g, err := c.GetJob(context.Background(), connect.NewRequest(&hodeiv1.GetJobRequest{Id: r.Msg.Job.Id}))
	if err != nil {
		t.Fatal(err)
	}
	if g.Msg.Job.SubmittedBy != "ci-bot" {
		t.Errorf("submitted_by %q, want ci-bot", g.Msg.Job.SubmittedBy)
	}
	rs, err := c.SubmitJobs(context.Background(), connect.NewRequest(&hodeiv1.SubmitJobsRequest{Specs: []*hodeiv1.JobSpec{{Command: []string{"true"}}}}))
	if err != nil {
		t.Fatal(err)
	}
	if j, err := st.GetJob(context.Background(), rs.Msg.Jobs[0].Id); err != nil || j.SubmittedBy != "ci-bot" {
		t.Errorf("batch job: submitted by %q (%v), want ci-bot", j.SubmittedBy, err)
	}
}
