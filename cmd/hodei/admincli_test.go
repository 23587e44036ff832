package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// unreachableKubeconfig writes a kubeconfig whose API server does not
// answer, with namespace workers.
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters:
- name: gone
  cluster: {server: "https://`+freeAddr(t)+`"}
contexts:
- name: gone
  context: {cluster: gone, user: u, namespace: workers}
current-context: gone
users:
- name: u
  user: {token: none}
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// tableRows returns the whitespace-separated fields of each line of a table
// after its header, which it checks.
func tableRows(t *testing.T, what string, r result, header string) [][]string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: %+v", what, r)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != header {
		t.Fatalf("%s: header %q, want %q", what, got, header)
	}
	var out [][]string
	for _, l := range lines[1:] {
		out = append(out, strings.Fields(l))
	}
	return out
}

// TestProviderCommands: `hodei provider` lists the providers with their
// health (a Kubernetes provider whose API server does not answer is
// unhealthy, saying since when and why), and disables, enables and
// limits one, showing the result as a table, JSON or YAML; a provider
// that does not exist is not found.
func TestProviderCommands(t *testing.T) {
	t.Parallel()
	p := startServerOn(t, storetest.URL(t), freeAddr(t), "--max-workers", "2", "--k8s-max-workers", "3", "--k8s-kubeconfig", unreachableKubeconfig(t))
	const header = "NAME KIND ENABLED HEALTHY WORKERS IDLE TIMEOUT MESSAGE"
	var k8s []string
	eventually(t, 30*time.Second, "kubernetes provider unhealthy", func() bool {
		for _, row := range tableRows(t, "provider list", p.hodei(t, "provider", "list"), header) {
			if row[0] == "kubernetes" {
				k8s = row
			}
		}
		return len(k8s) > 3 && k8s[3] == "no"
	})
	line := strings.Join(k8s, " ")
	if !strings.HasPrefix(line, "kubernetes kubernetes yes no (") || !strings.Contains(line, " 0/3 1m0s health check failed: kubernetes API server /readyz: ") {
		t.Errorf("provider list, kubernetes: %q; want enabled, unhealthy for some time, 0/3 workers, 1m0s idle and the failed check", line)
	}

	if got := tableRows(t, "provider disable", p.hodei(t, "provider", "disable", "process"), header); len(got) != 1 || strings.Join(got[0][:5], " ") != "process process no yes 0/2" {
		t.Errorf("provider disable process: %v, want process disabled, healthy, 0/2 workers", got)
	}
	r := p.hodei(t, "provider", "enable", "process", "-o", "json")
	var prov struct {
		Name        string
		Enabled     bool
		MaxWorkers  int
		IdleTimeout string
		Ephemeral   bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &prov); r.code != 0 || err != nil || prov.Name != "process" || !prov.Enabled {
		t.Errorf("provider enable process -o json: %+v (%v), want it enabled", r, err)
	}
	got := tableRows(t, "provider set", p.hodei(t, "provider", "set", "process", "--max-workers", "5", "--idle-timeout", "45s", "--ephemeral=true"), header)
	if len(got) != 1 || strings.Join(got[0][:7], " ") != "process process yes yes 0/5 45s ephemeral" {
		t.Errorf("provider set process: %v, want 0/5 workers and 45s ephemeral", got)
	}
	r = p.hodei(t, "provider", "set", "process", "--ephemeral=false", "-o", "yaml")
	if r.code != 0 || !strings.Contains(r.stdout, "maxWorkers: 5\n") || !strings.Contains(r.stdout, "idleTimeout: 45s\n") || strings.Contains(r.stdout, "ephemeral") {
		t.Errorf("provider set process --ephemeral=false -o yaml: %+v, want 5 workers, 45s and not ephemeral", r)
	}
	r = p.hodei(t, "provider", "get", "kubernetes", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &prov); r.code != 0 || err != nil || prov.MaxWorkers != 3 || prov.Enabled != true {
		t.Errorf("provider get kubernetes -o json: %+v (%v)", r, err)
	}
	if r := p.hodei(t, "provider", "list", "-o", "yaml"); r.code != 0 || strings.Count(r.stdout, "\n  name: ") != 2 {
		t.Errorf("provider list -o yaml: %+v, want the two providers", r)
	}
	for _, args := range [][]string{{"get", "docker"}, {"disable", "docker"}, {"set", "docker", "--max-workers", "1"}} {
		if r := p.hodei(t, append([]string{"provider"}, args...)...); r.code != 1 || !strings.HasPrefix(r.stderr, "hodei: not_found: ") {
			t.Errorf("provider %s: %+v, want exit 1 and not_found", strings.Join(args, " "), r)
		}
	}
}

// TestTokenCommands: the first admin token comes straight from the
// database (token create --database), and it then creates, lists and
// revokes tokens through the server; a token's secret shows once, at
// creation, and bad requests are refused naming what is wrong.
func TestTokenCommands(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	withDB := append(os.Environ(), "HODEI_DATABASE_URL="+dbURL)
	r := runHodei(t, withDB, "token", "create", "first-admin", "--scope", "admin", "--database")
	admin := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(admin, "hodei_") ||
		r.stderr != "token first-admin created with scopes admin, expires never; its secret, on stdout, is shown only now\n" {
		t.Fatalf("token create --database: %+v", r)
	}
	var created struct {
		Token struct {
			Name, ExpiresAt string
			Scopes          []string
		}
		Secret string
	}
	r = runHodei(t, withDB, "token", "create", "ci", "--scope", "jobs:write", "--scope", "metrics", "--ttl", "48h", "--database", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &created); r.code != 0 || err != nil || created.Token.Name != "ci" ||
		strings.Join(created.Token.Scopes, ",") != "jobs:write,metrics" || created.Token.ExpiresAt == "" || !strings.HasPrefix(created.Secret, "hodei_") {
		t.Fatalf("token create --database -o json: %+v (%v)", r, err)
	}
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{os.Environ(), []string{"--scope", "admin"}, "hodei: token create --database: HODEI_DATABASE_URL is not set"},
		{withDB, []string{"--scope", "root"}, "scopes: "},
		{append(os.Environ(), "HODEI_DATABASE_URL=postgres://hodei@"+freeAddr(t)+"/none?connect_timeout=5"), []string{"--scope", "admin"}, "hodei: "},
	} {
		r := runHodei(t, tc.env, append([]string{"token", "create", "other", "--database"}, tc.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("token create --database %v: %+v, want exit 1 and %q", tc.args, r, tc.want)
		}
	}

	p := startServerOn(t, dbURL, freeAddr(t))
	env := append(os.Environ(), "HODEI_SERVER="+p.addr, "HODEI_CONFIG=/nonexistent/config.json", "HODEI_TOKEN="+admin)
	hodei := func(args ...string) result { t.Helper(); return runHodei(t, env, args...) }
	r = hodei("token", "create", "reader", "--scope", "jobs:read", "-o", "yaml")
	if r.code != 0 || !strings.Contains(r.stdout, "name: reader\n") || !strings.Contains(r.stdout, "secret: hodei_") {
		t.Fatalf("token create -o yaml: %+v", r)
	}
	got := tableRows(t, "token list", hodei("token", "list"), "NAME ID SCOPES CREATED EXPIRES REVOKED LAST USED")
	names := map[string][]string{}
	for _, row := range got {
		names[row[0]] = row
	}
	if len(got) != 3 || names["first-admin"][4] != "never" || names["ci"][4] == "never" || names["reader"][6] != "-" {
		t.Errorf("token list: %v; want first-admin (never expires), ci (expires) and reader (never used)", got)
	}
	if strings.Contains(hodei("token", "list", "-o", "json").stdout, "hodei_") {
		t.Error("token list -o json shows a secret")
	}
	r = hodei("token", "revoke", names["ci"][1], "-o", "json")
	var revoked struct {
		Token struct{ Name, RevokedAt string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &revoked); r.code != 0 || err != nil || revoked.Token.Name != "ci" || revoked.Token.RevokedAt == "" {
		t.Errorf("token revoke ID -o json: %+v (%v), want ci revoked", r, err)
	}
	if r := hodei("token", "revoke", "nobody"); r.code != 1 || !strings.HasPrefix(r.stderr, "hodei: not_found: ") {
		t.Errorf("token revoke nobody: %+v, want not_found", r)
	}
	if r := hodei("token", "create", "reader", "--scope", "jobs:read"); r.code != 1 || !strings.HasPrefix(r.stderr, "hodei: already_exists: ") {
		t.Errorf("token create of an existing name: %+v, want already_exists", r)
	}
	ci := append(env[:len(env):len(env)], "HODEI_TOKEN="+created.Secret)
	if r := runHodei(t, ci, "job", "list"); r.code != 1 || !strings.Contains(r.stderr, "unauthenticated") {
		t.Errorf("job list with the revoked token: %+v, want unauthenticated", r)
	}
}

// TestJobTypeAndJobListOutputs: job types are set, shown, listed and
// deleted in each output format; a job list cut short by --limit says
// there are more; explain answers in JSON too; explaining, watching or
// following the logs of a job that does not exist ends at once.
func TestJobTypeAndJobListOutputs(t *testing.T) {
	t.Parallel()
	p := startServerOn(t, storetest.URL(t), freeAddr(t), "--max-workers", "0")
	const header = "TYPE MAX ATTEMPTS RETRY EXIT CODES BACKOFF UPDATED"
	if got := tableRows(t, "jobtype list", p.hodei(t, "jobtype", "list"), header); len(got) != 0 {
		t.Errorf("jobtype list of a new installation: %v, want none", got)
	}
	var set struct {
		JobType struct {
			Name  string
			Retry struct{ MaxAttempts int }
		}
	}
	r := p.hodei(t, "jobtype", "set", "nightly", "--max-attempts", "2", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &set); r.code != 0 || err != nil || set.JobType.Name != "nightly" || set.JobType.Retry.MaxAttempts != 2 {
		t.Errorf("jobtype set -o json: %+v (%v)", r, err)
	}
	if got := tableRows(t, "jobtype get", p.hodei(t, "jobtype", "get", "nightly"), header); len(got) != 1 || strings.Join(got[0][:4], " ") != "nightly 2 - 1s..32s" {
		t.Errorf("jobtype get nightly: %v, want 2 attempts, no exit codes, the default backoff", got)
	}
	if r := p.hodei(t, "jobtype", "list", "-o", "yaml"); r.code != 0 || !strings.Contains(r.stdout, "name: nightly\n") {
		t.Errorf("jobtype list -o yaml: %+v", r)
	}
	if r := p.hodei(t, "jobtype", "delete", "nightly"); r.code != 0 || r.stdout != "job type nightly deleted\n" {
		t.Errorf("jobtype delete: %+v", r)
	}
	for _, verb := range []string{"get", "delete"} {
		if r := p.hodei(t, "jobtype", verb, "nightly"); r.code != 1 || !strings.HasPrefix(r.stderr, "hodei: not_found: ") {
			t.Errorf("jobtype %s of a deleted type: %+v, want not_found", verb, r)
		}
	}

	var ids []string
	for range 2 {
		r := p.hodei(t, "job", "submit", "--label", "pool=none", "--", "true")
		if r.code != 0 {
			t.Fatalf("job submit: %+v", r)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	r = p.hodei(t, "job", "list", "--limit", "1")
	if got := tableRows(t, "job list --limit 1", r, "ID NAME STATE ATTEMPT AGE"); len(got) != 1 || got[0][0] != ids[1] ||
		r.stderr != "hodei: more jobs; use --all or a larger --limit\n" {
		t.Errorf("job list --limit 1: %v, stderr %q; want the newest job and a note that there are more", got, r.stderr)
	}
	var explain struct{ Reasons []string }
	r = p.hodei(t, "job", "explain", ids[0], "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &explain); r.code != 0 || err != nil || len(explain.Reasons) == 0 || !strings.Contains(strings.Join(explain.Reasons, "\n"), "pool") {
		t.Errorf("job explain -o json: %+v (%v), want reasons naming the label", r, err)
	}
	// A following command on a job that does not exist ends at once.
	for _, args := range [][]string{{"explain"}, {"watch"}, {"logs", "-f"}} {
		args = append([]string{"job"}, append(args, "01a2483c-b32b-7479-a6ca-dd0f07d8c7a1")...)
		if r := p.hodei(t, args...); r.code != 1 || !strings.HasPrefix(r.stderr, "hodei: not_found: ") {
			t.Errorf("hodei %s of an unknown job: %+v, want not_found", strings.Join(args, " "), r)
		}
	}
}

// TestEventsTailAfterAnUnknownEvent: `events tail --after` an id the log
// does not hold fails at once, naming the field, instead of reconnecting
// forever.
func TestEventsTailAfterAnUnknownEvent(t *testing.T) {
	t.Parallel()
	p := startServerOn(t, storetest.URL(t), freeAddr(t), "--max-workers", "0")
	r := p.hodei(t, "events", "tail", "--after", "987654321")
	if r.code == 0 || r.code == -1 || !strings.Contains(r.stderr, "after_id") {
		t.Errorf("events tail --after an unknown id: exit %d, stderr %q; want a failure naming after_id", r.code, r.stderr)
	}
}
