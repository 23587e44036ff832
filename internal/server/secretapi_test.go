package server

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/secret"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func testKeyring(t *testing.T) *secret.Keyring {
	t.Helper()
	keys, err := secret.LoadKeyring(filepath.Join(t.TempDir(), "key"), true)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// auditOps lists the operations of a secret's audit trail, oldest first.
func auditOps(t *testing.T, c hodeiv1connect.SecretServiceClient, name string) []string {
	t.Helper()
	r, err := c.ListSecretAudit(context.Background(), connect.NewRequest(&hodeiv1.ListSecretAuditRequest{Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, e := range r.Msg.Entries {
		ops = append(ops, e.Operation)
	}
	return ops
}

// TestSecretLifecycleThroughTheAPI: a secret is set (bad names and values
// are refused, naming the field, and store nothing), set again as a new
// version, re-sealed under a new key by a rotation that keeps its value,
// and deleted; every step is in its audit trail, which refuses a bad
// limit.
func TestSecretLifecycleThroughTheAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.Open(t)
	keys := testKeyring(t)
	base, s := serveAPI(t, st, Config{ReplicaID: "secret-api", SecretKeys: keys})
	c := hodeiv1connect.NewSecretServiceClient(auth.WithBearer(h2c(), newToken(t, st, "ops", 0, auth.Admin)), base, connect.WithGRPC())
	set := func(name, value string) (*hodeiv1.Secret, error) {
		r, err := c.SetSecret(ctx, connect.NewRequest(&hodeiv1.SetSecretRequest{Name: name, Value: []byte(value)}))
		if err != nil {
			return nil, err
		}
		return r.Msg.Secret, nil
	}
	_, err := set("Bad Name", "a-long-value")
	refused(t, err, connect.CodeInvalidArgument, "name")
	_, err = set("db-pass", "abc")
	refused(t, err, connect.CodeInvalidArgument, "value must be at least 4 bytes")
	_, err = set("db-pass", "nul\x00byte")
	refused(t, err, connect.CodeInvalidArgument, "value must not contain a NUL byte")
	if l, err := c.ListSecrets(ctx, connect.NewRequest(&hodeiv1.ListSecretsRequest{})); err != nil || len(l.Msg.Secrets) != 0 {
		t.Fatalf("secrets after refused sets: %v, %v; want none", l, err)
	}
	for v, value := range []string{"first-value", "second-value"} {
		x, err := set("db-pass", value)
		if err != nil || x.Version != int32(v+1) || x.UpdatedBy != "ops" {
			t.Fatalf("set %d: %v, %v; want version %d by ops", v+1, x, err, v+1)
		}
	}
	l, err := c.ListSecrets(ctx, connect.NewRequest(&hodeiv1.ListSecretsRequest{}))
	if err != nil || len(l.Msg.Secrets) != 1 || l.Msg.Secrets[0].Name != "db-pass" || l.Msg.Secrets[0].Version != 2 {
		t.Fatalf("secrets: %v, %v; want db-pass version 2", l, err)
	}

	old := keys.Current()
	r, err := c.RotateSecretKey(ctx, connect.NewRequest(&hodeiv1.RotateSecretKeyRequest{}))
	if err != nil || r.Msg.Secrets != 1 || r.Msg.KeyId == old || r.Msg.KeyId != keys.Current() {
		t.Fatalf("rotate: %v, %v; want 1 secret under a new current key (was %s)", r, err, old)
	}
	// The value still opens, under the new key only.
	sealed, err := st.PeekSecrets(ctx, []string{"db-pass"})
	if err != nil || len(sealed) != 1 || sealed[0].Sealed.KeyID != r.Msg.KeyId {
		t.Fatalf("stored secret %+v, %v; want it sealed under %s", sealed, err, r.Msg.KeyId)
	}
	if v, err := keys.Open("db-pass", 2, sealed[0].Sealed); err != nil || string(v) != "second-value" {
		t.Errorf("value after the rotation: %q, %v", v, err)
	}

	if _, err := c.DeleteSecret(ctx, connect.NewRequest(&hodeiv1.DeleteSecretRequest{Name: "db-pass"})); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteSecret(ctx, connect.NewRequest(&hodeiv1.DeleteSecretRequest{Name: "db-pass"}))
	refused(t, err, connect.CodeNotFound, "db-pass")
	if d := cmp.Diff([]string{store.AuditSet, store.AuditSet, store.AuditRotateKey, store.AuditDelete}, auditOps(t, c, "db-pass")); d != "" {
		t.Errorf("audit trail (-want +got):\n%s", d)
	}
	for _, bad := range []int32{-1, 1001} {
		_, err := c.ListSecretAudit(ctx, connect.NewRequest(&hodeiv1.ListSecretAuditRequest{Name: "db-pass", Limit: bad}))
		refused(t, err, connect.CodeInvalidArgument, "limit")
	}
	_, err = c.ListSecretAudit(ctx, connect.NewRequest(&hodeiv1.ListSecretAuditRequest{Name: "-bad-"}))
	refused(t, err, connect.CodeInvalidArgument, "name")
	if a, err := c.ListSecretAudit(ctx, connect.NewRequest(&hodeiv1.ListSecretAuditRequest{Name: "db-pass", Limit: 1})); err != nil || len(a.Msg.Entries) != 1 {
		t.Errorf("audit with limit 1: %v, %v; want one entry", a, err)
	}
	for op, want := range map[string]float64{store.AuditSet: 2, store.AuditRotateKey: 1, store.AuditDelete: 1} {
		if n := testutil.ToFloat64(s.metrics.secretAccesses.WithLabelValues(op)); n != want {
			t.Errorf("%s accesses %v, want %v", op, n, want)
		}
	}
}

// TestSecretsOffWithoutAKeyFile: a server without a key file refuses to
// store secrets, to rotate its key and to accept jobs that reference
// secrets; an attempt that references one carries why instead of values.
func TestSecretsOffWithoutAKeyFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.Open(t)
	base, s := serveAPI(t, st, Config{ReplicaID: "no-secrets"})
	hc := auth.WithBearer(h2c(), newToken(t, st, "ops", 0, auth.Admin))
	c := hodeiv1connect.NewSecretServiceClient(hc, base, connect.WithGRPC())
	_, err := c.SetSecret(ctx, connect.NewRequest(&hodeiv1.SetSecretRequest{Name: "db-pass", Value: []byte("a-long-value")}))
	refused(t, err, connect.CodeFailedPrecondition, "--secret-key-file")
	_, err = c.RotateSecretKey(ctx, connect.NewRequest(&hodeiv1.RotateSecretKeyRequest{}))
	refused(t, err, connect.CodeFailedPrecondition, "--secret-key-file")
	jobs := hodeiv1connect.NewJobServiceClient(hc, base, connect.WithGRPC())
	_, err = jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: &hodeiv1.JobSpec{Command: []string{"true"}, Secrets: []*hodeiv1.SecretRef{{Name: "db-pass"}}}}))
	refused(t, err, connect.CodeFailedPrecondition, "--secret-key-file")

	run := &hodeiv1.RunJob{}
	s.resolveSecrets("w", store.Assignment{JobID: "j", Spec: job.Spec{Secrets: []job.SecretRef{{Name: "db-pass"}}}}, run)
	if run.SecretError != "secrets are off: the server has no --secret-key-file" || len(run.Secrets) != 0 {
		t.Errorf("RunJob without a key file: %q, %d secrets", run.SecretError, len(run.Secrets))
	}
}

// TestDispatchOfSecretsThatCannotBeResolved: an attempt whose secret was
// deleted since its submission, or whose stored value the key file cannot
// open, carries why (naming the secret, never a value) instead of values;
// an attempt that reconnects to a replica that did not dispatch it has
// its values read again for the redaction of its output.
func TestDispatchOfSecretsThatCannotBeResolved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.Open(t)
	keys, other := testKeyring(t), testKeyring(t)
	_, s := serveAPI(t, st, Config{ReplicaID: "dispatch", SecretKeys: keys})
	seal := func(k *secret.Keyring, name, value string) {
		t.Helper()
		if _, err := st.SetSecret(ctx, name, "", func(v int32) (secret.Sealed, error) { return k.Seal(name, v, []byte(value)) }); err != nil {
			t.Fatal(err)
		}
	}
	seal(keys, "gone", "value-gone")
	seal(other, "foreign", "value-foreign")
	seal(keys, "kept", "value-kept")
	w := storetest.ConnectedWorker(t, st)
	dispatch := func(name string) (*hodeiv1.RunJob, store.Assignment) {
		t.Helper()
		if _, _, err := st.CreateJob(ctx, job.Spec{Command: []string{"true"}, Secrets: []job.SecretRef{{Name: name}}}, 1); err != nil {
			t.Fatal(err)
		}
		as, err := st.Claim(ctx, store.WorkerMatch{ID: w}, 1)
		if err != nil || len(as) != 1 {
			t.Fatalf("claim: %v, %v", as, err)
		}
		run := &hodeiv1.RunJob{JobId: as[0].JobID, FencingToken: as[0].Token}
		if name == "gone" {
			if err := st.DeleteSecret(ctx, "gone", ""); err != nil {
				t.Fatal(err)
			}
		}
		s.resolveSecrets(w, as[0], run)
		return run, as[0]
	}
	for name, want := range map[string]string{"gone": "secret gone", "foreign": "open secret foreign: the key file cannot open it"} {
		run, a := dispatch(name)
		if !strings.Contains(run.SecretError, want) || len(run.Secrets) != 0 || strings.Contains(run.SecretError, "value-") {
			t.Errorf("%s: RunJob error %q with %d secrets, want %q and no value", name, run.SecretError, len(run.Secrets), want)
		}
		if s.redact.has(a.Token) {
			t.Errorf("%s: values held for an attempt that carries none", name)
		}
		if _, err := st.ApplyReports(ctx, []store.Report{{JobID: uuid.MustParse(a.JobID), Token: a.Token, Finish: &store.Result{ExitCode: -1, Class: job.FailureInvalid, Message: run.SecretError}}}); err != nil {
			t.Fatal(err)
		}
	}
	_, a := dispatch("kept")
	s.redact.forget(a.Token) // as if the attempt had been dispatched by another replica
	if err := s.rememberSecrets(ctx, a.JobID, a.Token); err != nil || !s.redact.has(a.Token) {
		t.Fatalf("remember the secrets of a reconnected attempt: %v, held %v", err, s.redact.has(a.Token))
	}
	c := &workerConn{id: w, running: map[int64]string{a.Token: a.JobID}}
	s.forgetSecrets(c)
	if s.redact.has(a.Token) {
		t.Error("the values of an ended stream's attempt are still held")
	}
}
