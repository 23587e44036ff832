package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// showsNoValue fails the test when r's output holds one of values.
func showsNoValue(t *testing.T, what string, r result, values ...string) {
	t.Helper()
	for _, v := range values {
		if strings.Contains(r.stdout+r.stderr, v) {
			t.Errorf("%s shows a secret's value: %+v", what, r)
		}
	}
}

// TestSecretCommands manages secrets through the CLI without running a
// job: values come from a file or stdin and never show in any output,
// versions count up, the audit lists every change, a key rotation
// re-seals every value, a deleted secret is gone, and bad command lines
// are refused with what is wrong named.
func TestSecretCommands(t *testing.T) {
	t.Parallel()
	p, _ := startSecretServer(t)
	const fromFile, fromStdin = "from-a-file-1", "from-stdin-22"
	file := filepath.Join(t.TempDir(), "value")
	if err := os.WriteFile(file, []byte(fromFile+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noValue := func(what string, r result) { t.Helper(); showsNoValue(t, what, r, fromFile, fromStdin) }

	r := p.hodei(t, "secret", "set", "api-key", "--from-file", file, "-o", "json")
	var set struct {
		Secret struct {
			Name, UpdatedBy string
			Version         int
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &set); r.code != 0 || err != nil {
		t.Fatalf("secret set --from-file -o json: %+v (%v)", r, err)
	}
	if set.Secret.Name != "api-key" || set.Secret.Version != 1 || set.Secret.UpdatedBy != "test-admin" {
		t.Errorf("secret set -o json: %+v, want api-key version 1 updated by test-admin", set.Secret)
	}
	noValue("secret set -o json", r)
	if r := p.hodeiIn(t, fromStdin+"\n", "secret", "set", "api-key"); r.code != 0 || r.stdout != "secret api-key set (version 2)\n" {
		t.Fatalf("secret set from stdin: %+v, want version 2", r)
	}

	r = p.hodei(t, "secret", "list")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != 0 || len(lines) != 2 ||
		strings.Join(strings.Fields(lines[0]), " ") != "NAME VERSION UPDATED UPDATED BY CREATED" ||
		!strings.HasPrefix(lines[1], "api-key ") || strings.Fields(lines[1])[1] != "2" || strings.Fields(lines[1])[3] != "test-admin" {
		t.Errorf("secret list: %+v, want a header and api-key at version 2 updated by test-admin", r)
	}
	noValue("secret list", r)
	if r := p.hodei(t, "secret", "list", "-o", "yaml"); r.code != 0 || !strings.Contains(r.stdout, "name: api-key") || !strings.Contains(r.stdout, "version: 2") {
		t.Errorf("secret list -o yaml: %+v", r)
	}

	r = p.hodei(t, "secret", "rotate-key")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "secret key rotated: new key ") || !strings.HasSuffix(r.stdout, ", 1 secrets re-sealed\n") {
		t.Errorf("secret rotate-key: %+v", r)
	}
	var rot struct {
		KeyID   string
		Secrets int
	}
	r = p.hodei(t, "secret", "rotate-key", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &rot); r.code != 0 || err != nil || rot.KeyID == "" || rot.Secrets != 1 {
		t.Errorf("secret rotate-key -o json: %+v (%v), want a key id and 1 secret", r, err)
	}

	var audit struct {
		Entries []struct {
			Operation, Actor string
			Version          int
		}
	}
	r = p.hodei(t, "secret", "audit", "api-key", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &audit); r.code != 0 || err != nil {
		t.Fatalf("secret audit -o json: %+v (%v)", r, err)
	}
	var ops []string
	for _, e := range audit.Entries {
		ops = append(ops, e.Operation)
		if e.Actor != "test-admin" {
			t.Errorf("audit entry %+v: actor %q, want test-admin", e, e.Actor)
		}
	}
	if strings.Join(ops, " ") != "set set rotate-key rotate-key" {
		t.Errorf("secret audit operations, oldest first: %v, want two sets and two rotations", ops)
	}
	r = p.hodei(t, "secret", "audit", "api-key", "--limit", "1")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != 0 || len(lines) != 2 ||
		strings.Join(strings.Fields(lines[0]), " ") != "TIME OPERATION VERSION JOB ATTEMPT WORKER ACTOR" ||
		strings.Join(strings.Fields(lines[1])[1:], " ") != "rotate-key 2 - - - test-admin" {
		t.Errorf("secret audit --limit 1: %+v, want a header and the last rotation", r)
	}
	noValue("secret audit", r)
	if r := p.hodei(t, "secret", "audit", "api-key", "--limit", "5000"); r.code != 1 || !strings.Contains(r.stderr, "invalid_argument: limit: ") {
		t.Errorf("secret audit --limit 5000: %+v, want exit 1 naming the limit", r)
	}

	if r := p.hodei(t, "secret", "delete", "api-key"); r.code != 0 || r.stdout != "secret api-key deleted\n" {
		t.Errorf("secret delete: %+v", r)
	}
	if r := p.hodei(t, "secret", "delete", "api-key"); r.code != 1 || !strings.HasPrefix(r.stderr, "hodei: not_found: ") {
		t.Errorf("second secret delete: %+v, want exit 1 and not_found", r)
	}
	if r := p.hodei(t, "secret", "list"); r.code != 0 || strings.Contains(r.stdout, "api-key") {
		t.Errorf("secret list after delete: %+v, want no api-key", r)
	}

	refusesBadSecretCommands(t, p, file)
}

// refusesBadSecretCommands: bad secret command lines are usage errors
// naming what is wrong, and store nothing.
func refusesBadSecretCommands(t *testing.T, p serverProc, file string) {
	t.Helper()
	for _, tc := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"secret"}, "", "secret: missing subcommand"},
		{[]string{"secret", "reveal", "api-key"}, "", `secret: unknown subcommand "reveal"`},
		{[]string{"secret", "set"}, "value-1", "secret set: want NAME"},
		{[]string{"secret", "set", "a", "value-on-argv"}, "", `secret set: unexpected argument "value-on-argv"`},
		{[]string{"secret", "set", "a", "--from-file", file + ".missing"}, "", "secret set: --from-file: "},
		{[]string{"secret", "set", "a"}, "", "secret set: value: must be at least 4 bytes (got 0)"},
		{[]string{"secret", "list", "extra"}, "", `secret list: unexpected argument "extra"`},
		{[]string{"secret", "delete"}, "", "secret delete: want NAME"},
		{[]string{"secret", "rotate-key", "now"}, "", `secret rotate-key: unexpected argument "now"`},
		{[]string{"secret", "audit"}, "", "secret audit: want NAME"},
		{[]string{"secret", "audit", "a", "--limit", "x"}, "", "flag -limit"},
		{[]string{"secret", "list", "-o", "xml"}, "", "want one of table, json, yaml"},
	} {
		r := p.hodeiIn(t, tc.stdin, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("hodei %s: %+v, want exit 2 and %q", strings.Join(tc.args, " "), r, tc.want)
		}
	}
	if r := p.hodei(t, "secret", "list"); r.code != 0 || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("secret list after the refused command lines: %+v, want the header only", r)
	}
}

// TestSecretCommandsWithoutAKeyFile: a server without a key file stores
// no secret and says why.
func TestSecretCommandsWithoutAKeyFile(t *testing.T) {
	t.Parallel()
	plain := startServer(t)
	for _, args := range [][]string{{"secret", "set", "db"}, {"secret", "rotate-key"}} {
		if r := plain.hodeiIn(t, "value-1\n", args...); r.code != 1 || !strings.Contains(r.stderr, "failed_precondition: secrets are off: the server has no --secret-key-file") {
			t.Errorf("hodei %s on a server without a key file: %+v, want exit 1 naming --secret-key-file", strings.Join(args, " "), r)
		}
	}
}
