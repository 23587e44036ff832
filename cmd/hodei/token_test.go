package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// hodeiWith runs the hodei CLI with env on top of the environment without
// any HODEI_ variable.
func hodeiWith(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runHodei(t, append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "HODEI_") }), env...), args...)
}

// TestDevWritesTheClientConfiguration: `hodei dev` in one shell and
// `hodei run -- echo hi` in another work with nothing but the client
// configuration file dev wrote; tokens made with `hodei token` have their
// scopes' rights only, and none once revoked.
func TestDevWritesTheClientConfiguration(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "hodei", "config.json")
	addr := freeAddr(t)
	dev := spawnPlatform(t, []string{"HODEI_CONFIG=" + cfg}, "dev", "--listen", addr, "--max-workers", "1")
	dev.waitLog(t, 60*time.Second, "Hodei is running on "+addr)
	fi, err := os.Stat(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %04o, want 0600", cfg, fi.Mode().Perm())
	}
	withConfig := []string{"HODEI_CONFIG=" + cfg}
	if r := hodeiWith(t, withConfig, "run", "--", "echo", "hi"); r.stdout != "hi\n" || r.code != 0 {
		t.Fatalf("hodei run with the configuration file: %+v", r)
	}
	none := hodeiWith(t, []string{"HODEI_CONFIG=" + cfg + ".none", "HODEI_SERVER=" + addr}, "job", "list")
	if none.code != 1 || !strings.Contains(none.stderr, "unauthenticated") {
		t.Fatalf("job list without a token: %+v, want exit 1 and unauthenticated", none)
	}

	r := hodeiWith(t, withConfig, "token", "create", "reader", "--scope", "jobs:read")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "hodei_") {
		t.Fatalf("token create: %+v", r)
	}
	reader := append(slices.Clone(withConfig), "HODEI_TOKEN="+strings.TrimSpace(r.stdout))
	id := strings.TrimSpace(hodeiWith(t, withConfig, "job", "submit", "--", "true").stdout)
	if r := hodeiWith(t, reader, "job", "get", id); r.code != 0 || !strings.Contains(r.stdout, "Submitted by:") || !strings.Contains(r.stdout, "dev-admin-") {
		t.Errorf("job get with the reader token: %+v, want the job submitted by the dev admin token", r)
	}
	if r := hodeiWith(t, reader, "job", "submit", "--", "true"); r.code != 1 || !strings.Contains(r.stderr, "permission_denied") {
		t.Errorf("job submit with the reader token: %+v, want exit 1 and permission_denied", r)
	}
	if r := hodeiWith(t, reader, "token", "list"); r.code != 1 || !strings.Contains(r.stderr, "permission_denied") {
		t.Errorf("token list with the reader token: %+v, want permission_denied", r)
	}
	if r := hodeiWith(t, withConfig, "token", "list"); r.code != 0 || !strings.Contains(r.stdout, "reader") || strings.Contains(r.stdout, "hodei_") {
		t.Errorf("token list: %+v, want the reader token without any secret", r)
	}
	if r := hodeiWith(t, withConfig, "token", "revoke", "reader"); r.code != 0 {
		t.Fatalf("token revoke: %+v", r)
	}
	if r := hodeiWith(t, reader, "job", "get", id); r.code != 1 || !strings.Contains(r.stderr, "unauthenticated") {
		t.Errorf("job get with the revoked token: %+v, want unauthenticated", r)
	}
}
