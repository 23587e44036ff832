package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/secret"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestServerResolvesSecretsAndMasksWhatTheAgentMissed: an attempt's
// RunJob carries its secrets' values, under the variables the spec names,
// and a canary; the read is audited. A log batch and a result message
// that still hold a value or the canary (an agent whose redaction failed)
// are stored masked, counted and published as SecretLeakBlocked.
func TestServerResolvesSecretsAndMasksWhatTheAgentMissed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := storetest.URL(t)
	st, err := store.Open(ctx, store.Config{URL: url, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	keys, err := secret.LoadKeyring(filepath.Join(t.TempDir(), "key"), true)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(Config{ReplicaID: "secrets", Registry: reg, SecretKeys: keys}, st, st.NewBus(eventbus.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	const value = "tiger-Lily-42"
	if _, err := st.SetSecret(ctx, "db-pass", "", func(v int32) (secret.Sealed, error) { return keys.Seal("db-pass", v, []byte(value)) }); err != nil {
		t.Fatal(err)
	}
	j, _, err := st.CreateJob(ctx, job.Spec{Command: []string{"true"}, Secrets: []job.SecretRef{{Name: "db-pass"}, {Name: "db-pass", Env: "PGPASSWORD"}}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	wid := storetest.ConnectedWorker(t, st)
	as, err := st.Claim(ctx, store.WorkerMatch{ID: wid}, 1)
	if err != nil || len(as) != 1 {
		t.Fatalf("claim: %v %v", as, err)
	}
	a := as[0]
	run := &hodeiv1.RunJob{JobId: a.JobID, FencingToken: a.Token}
	s.resolveSecrets(wid, a, run)
	if run.SecretError != "" || len(run.Secrets) != 2 || run.Canary == "" {
		t.Fatalf("RunJob: error %q, %d secrets, canary %q", run.SecretError, len(run.Secrets), run.Canary)
	}
	for i, env := range []string{"SECRET_DB_PASS", "PGPASSWORD"} {
		if got := run.Secrets[i]; got.Env != env || string(got.Value) != value || got.Version != 1 {
			t.Errorf("secret %d: %s=%q v%d, want %s", i, got.Env, got.Value, got.Version, env)
		}
	}
	audit, err := st.ListSecretAudit(ctx, "db-pass", 10)
	if err != nil || len(audit) != 2 || audit[1].Operation != "dispatch" || audit[1].JobID != j.ID || audit[1].WorkerID != wid {
		t.Fatalf("audit %+v %v, want set then one dispatch on %s", audit, err, wid)
	}

	c := &workerConn{id: wid, out: make(chan *hodeiv1.ConnectResponse, 16), done: make(chan struct{}), running: map[int64]string{}}
	msgs := []*hodeiv1.ConnectRequest{
		{Msg: &hodeiv1.ConnectRequest_Logs{Logs: &hodeiv1.LogBatch{JobId: a.JobID, FencingToken: a.Token, Seq: 1, Redactions: 3, Lines: []*hodeiv1.LogLine{
			{Data: []byte("pass=" + value)}, {Data: []byte("canary " + run.Canary)}, {Data: []byte("fine")}}}}},
		{Msg: &hodeiv1.ConnectRequest_Finished{Finished: &hodeiv1.AttemptFinished{JobId: a.JobID, FencingToken: a.Token, ExitCode: 1,
			FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE, Message: "could not log in with " + value, LastLogSeq: 1}}},
	}
	if err := s.applyReports(ctx, c, msgs); err != nil {
		t.Fatal(err)
	}
	recs, err := st.ReadLogs(ctx, a.JobID, 0, store.LogPos{}, store.LogEnd, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("logs %v %v", recs, err)
	}
	stored := recs[0].Data
	if bytes.Contains(stored, []byte(value)) || bytes.Contains(stored, []byte(run.Canary)) ||
		!bytes.Contains(stored, []byte("pass=[REDACTED:db-pass]")) || !bytes.Contains(stored, []byte("canary [REDACTED:canary]")) {
		t.Errorf("stored batch %q, want the value and the canary masked", stored)
	}
	got, err := st.GetJob(ctx, a.JobID)
	if err != nil || strings.Contains(got.Message, value) || !strings.Contains(got.Message, "[REDACTED:db-pass]") {
		t.Errorf("stored message %q (%v), want the value masked", got.Message, err)
	}
	if n := testutil.ToFloat64(s.metrics.leaksBlocked); n != 3 {
		t.Errorf("hodei_secret_leaks_blocked_total %v, want 3", n)
	}
	if n := testutil.ToFloat64(s.metrics.redactions); n != 6 {
		t.Errorf("hodei_log_redactions_total %v, want 3 from the agent and 3 of the server's", n)
	}
	if n := testutil.ToFloat64(s.metrics.secretAccesses.WithLabelValues("dispatch")); n != 1 {
		t.Errorf("dispatch accesses %v, want 1", n)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var types []string
	if err := conn.QueryRow(ctx, "SELECT array_agg(type ORDER BY id) FROM events WHERE type LIKE 'Secret%'").Scan(&types); err != nil {
		t.Fatal(err)
	}
	want := "SecretAccessAudited SecretInjected SecretAccessAudited SecretLeakBlocked SecretLeakBlocked"
	if strings.Join(types, " ") != want {
		t.Errorf("events %v, want %s", types, want)
	}
	if s.redact.has(a.Token) {
		t.Error("the attempt's values are still held after its result")
	}
}

// TestSubmissionRefusesUnknownAndForbiddenSecrets: a job naming a secret
// that does not exist, or one the caller may not use, is refused before
// anything is stored.
func TestSubmissionRefusesUnknownAndForbiddenSecrets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.Open(t)
	keys, err := secret.LoadKeyring(filepath.Join(t.TempDir(), "key"), true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{ReplicaID: "secrets", Registry: prometheus.NewRegistry(), SecretKeys: keys, SecretAccess: forbidSecret("other")}, st, st.NewBus(eventbus.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ok", "other"} {
		if _, err := st.SetSecret(ctx, name, "", func(v int32) (secret.Sealed, error) { return keys.Seal(name, v, []byte("value-"+name)) }); err != nil {
			t.Fatal(err)
		}
	}
	spec := func(names ...string) []job.Spec {
		var refs []job.SecretRef
		for i, n := range names {
			refs = append(refs, job.SecretRef{Name: n, Env: "V" + string(rune('A'+i))})
		}
		return []job.Spec{{Command: []string{"true"}}, {Command: []string{"true"}, Secrets: refs}}
	}
	field := func(i int) string { return "specs[" + string(rune('0'+i)) + "]." }
	for names, want := range map[string]string{
		"ok":         "",
		"ok missing": `specs[1].secrets[1].name: no secret is named "missing"`,
		"other":      "permission_denied: specs[1].secrets[0]: may not use other",
	} {
		err := s.checkSecrets(ctx, spec(strings.Fields(names)...), field)
		if (err == nil) != (want == "") || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", names, err, want)
		}
	}
}

// forbidSecret lets callers use every secret but one.
type forbidSecret string

func (f forbidSecret) MayUseSecret(_ context.Context, name string) error {
	if name == string(f) {
		return errorString("may not use " + name)
	}
	return nil
}
func (forbidSecret) Actor(context.Context) string { return "" }

type errorString string

func (e errorString) Error() string { return string(e) }

// TestSecretReferencesNeedTheSecretsUseScope: through the API, a token
// that may submit jobs but lacks secrets:use cannot submit one that
// references a secret; with the scope (or admin) it can.
func TestSecretReferencesNeedTheSecretsUseScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.Open(t)
	keys, err := secret.LoadKeyring(filepath.Join(t.TempDir(), "key"), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetSecret(ctx, "db-pass", "", func(v int32) (secret.Sealed, error) { return keys.Seal("db-pass", v, []byte("value-db")) }); err != nil {
		t.Fatal(err)
	}
	bus := st.NewBus(eventbus.Config{Logger: storetest.Logger(t)})
	s, err := New(Config{ReplicaID: "secrets-scope", Registry: prometheus.NewRegistry(), Logger: storetest.Logger(t), SecretKeys: keys}, st, bus)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.EnableHTTP2 = true
	srv.Start()
	defer srv.Close()
	spec := &hodeiv1.JobSpec{Command: []string{"true"}, Secrets: []*hodeiv1.SecretRef{{Name: "db-pass"}}}
	for _, c := range []struct {
		scopes []auth.Scope
		want   connect.Code // 0: accepted
	}{
		{[]auth.Scope{auth.JobsWrite}, connect.CodePermissionDenied},
		{[]auth.Scope{auth.JobsWrite, auth.SecretsUse}, 0},
		{[]auth.Scope{auth.Admin}, 0},
	} {
		tok := newToken(t, st, fmt.Sprintf("t%d", len(c.scopes))+string(c.scopes[0][0]), 0, c.scopes...)
		jc := hodeiv1connect.NewJobServiceClient(srv.Client(), srv.URL)
		req := connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec})
		req.Header().Set("Authorization", "Bearer "+tok)
		_, err := jc.SubmitJob(ctx, req)
		if got := connect.CodeOf(err); (err == nil) != (c.want == 0) || err != nil && got != c.want {
			t.Errorf("token with %v: %v, want code %v", c.scopes, err, c.want)
		}
	}
}
