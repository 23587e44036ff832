package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// noTestCA is the environment of a process that must not use the test
// run's CA.
func noTestCA(config string) []string {
	return []string{"HODEI_CA_CERT_FILE=", "HODEI_CA_KEY_FILE=", "HODEI_CA_FILE=", "HODEI_SERVER=", "HODEI_CONFIG=" + config}
}

// TestDevServesTLSWithItsOwnCA: `hodei dev --data-dir D` makes its CA key
// in D (mode 0600), serves only TLS, and writes the client configuration
// (mode 0600) with which `hodei run` works with no flag; restarted on D,
// it serves a certificate of the same CA.
func TestDevServesTLSWithItsOwnCA(t *testing.T) {
	t.Parallel()
	dir := searchableDir(t)
	data, config, addr := filepath.Join(dir, "pg"), filepath.Join(dir, "home", "config.json"), freeAddr(t)
	args := []string{"dev", "--listen", addr, "--data-dir", data, "--max-workers", "1"}
	dev := spawnPlatform(t, noTestCA(config), args...)
	dev.waitLog(t, 60*time.Second, "Hodei is running on "+addr)
	for _, f := range []string{filepath.Join(data, "hodei-ca.key"), config} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, want mode 0600", f, err)
		}
	}
	cfg := readConfig(t, config)
	if cfg.Server != addr || !strings.Contains(cfg.CA, "BEGIN CERTIFICATE") {
		t.Fatalf("configuration %+v, want server %s and a CA", cfg, addr)
	}

	cmd := exec.Command(hodeiBin, "run", "--", "echo", "hello over tls")
	cmd.Env = append(os.Environ(), noTestCA(config)...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello over tls") {
		t.Fatalf("hodei run with the configuration file: %v\n%s", err, out)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plaintext /healthz: %s, want 400 (TLS only)", resp.Status)
	}

	_ = dev.cmd.Process.Signal(os.Interrupt)
	<-dev.done
	again := spawnPlatform(t, noTestCA(config), args...)
	again.waitLog(t, 60*time.Second, "Hodei is running on "+addr)
	if got := readConfig(t, config); got.CA != cfg.CA {
		t.Errorf("the restarted dev trusts another CA:\n%s\nwant\n%s", got.CA, cfg.CA)
	}
}

type clientConfig struct{ Server, CA string }

func readConfig(t *testing.T, path string) clientConfig {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c clientConfig
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServerNeedsACertificateSource: `hodei server` without a CA refuses
// to start, naming the flags; with --insecure-plaintext it serves
// cleartext and says so.
func TestServerNeedsACertificateSource(t *testing.T) {
	t.Parallel()
	dbURL, addr := storetest.URL(t), freeAddr(t)
	config := filepath.Join(t.TempDir(), "config.json")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, hodeiBin, "server", "--listen", addr)
	cmd.Env = append(os.Environ(), append(noTestCA(config), "HODEI_DATABASE_URL="+dbURL)...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--ca-key-file") || !strings.Contains(string(out), "--insecure-plaintext") {
		t.Fatalf("hodei server without a CA: %v\n%s\nwant a refusal naming --ca-key-file and --insecure-plaintext", err, out)
	}

	p := spawnPlatform(t, append(noTestCA(config), "HODEI_DATABASE_URL="+dbURL), "server", "--listen", addr, "--insecure-plaintext")
	p.waitLog(t, 30*time.Second, "hodei server listening")
	if !strings.Contains(p.logs.String(), "INSECURE") {
		t.Error("no warning about plaintext")
	}
	list := exec.Command(hodeiBin, "job", "list", "--server", "http://"+addr)
	list.Env = append(os.Environ(), append(noTestCA(config), "HODEI_TOKEN="+dbToken(t, dbURL))...)
	var stderr bytes.Buffer
	list.Stderr = &stderr
	if err := list.Run(); err != nil {
		t.Errorf("job list over cleartext: %v\n%s", err, stderr.String())
	}
}

// TestTLSFlagsAreChecked: bad certificate flags end `hodei server` at
// once with an error naming the flag.
func TestTLSFlagsAreChecked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ca-key-file", junk, "--cert-ttl", "1h", "--cert-renew-before", "2h"}, "--cert-renew-before 2h0m0s: must be shorter than --cert-ttl 1h0m0s"},
		{[]string{"--ca-cert-file", junk}, "--ca-cert-file needs --ca-key-file"},
		{[]string{"--ca-key-file", junk}, "--ca-key-file: no PEM block"},
		{[]string{"--ca-key-file", junk, "--tls-cert-file", junk}, "--tls-cert-file and --tls-key-file go together"},
		{[]string{"--trust-ca-file", filepath.Join(dir, "missing.pem")}, "--trust-ca-file: open"},
		{[]string{"--ca-key-file", junk, "--cert-check-interval", "0s"}, "--cert-check-interval 0s: must be positive"},
		{[]string{"--ca-cert-file", junk, "--ca-key-file", junk}, "--ca-cert-file/--ca-key-file: "},
		{[]string{"--ca-key-file", junk, "--tls-cert-file", junk, "--tls-key-file", junk}, "--tls-cert-file: "},
		{[]string{"--trust-ca-file", junk, "--ca-key-file", junk}, "--ca-key-file: no PEM block"},
		{[]string{"--ca-key-file", dir}, "--ca-key-file: read " + dir + ": is a directory"},
	} {
		cmd := exec.Command(hodeiBin, append([]string{"server", "--listen", "127.0.0.1:0"}, tc.args...)...)
		cmd.Env = append(os.Environ(), append(noTestCA(filepath.Join(dir, "config.json")), "HODEI_DATABASE_URL=postgres://127.0.0.1:1/none")...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("hodei server %v: %v\n%s\nwant an error saying %q", tc.args, err, out, tc.want)
		}
	}
}

// TestDevOnADatabaseURLKeepsItsToken: `hodei dev` with HODEI_DATABASE_URL
// and no CA of its own serves TLS with a CA made for the run; restarted
// with --insecure-plaintext on the same database, it keeps the admin token
// of the client configuration, points the configuration at http://, and
// prints an http:// sign-in link; the CLI works with the configuration
// alone both times.
func TestDevOnADatabaseURLKeepsItsToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	config, addr, dbURL := filepath.Join(dir, "config.json"), freeAddr(t), storetest.URL(t)
	env := append(noTestCA(config), "HODEI_DATABASE_URL="+dbURL)
	list := func(what string) {
		t.Helper()
		if r := hodeiWith(t, []string{"HODEI_CONFIG=" + config}, "job", "list"); r.code != 0 {
			t.Errorf("job list %s: %+v", what, r)
		}
	}
	dev := spawnPlatform(t, env, "dev", "--listen", addr, "--max-workers", "0")
	dev.waitLog(t, 60*time.Second, "Hodei is running on "+addr)
	first := readConfig(t, config)
	token := configToken(config)()
	if first.Server != addr || !strings.Contains(first.CA, "BEGIN CERTIFICATE") || token == "" {
		t.Fatalf("configuration %+v, want server %s, a CA and a token", first, addr)
	}
	list("over TLS")
	_ = dev.cmd.Process.Signal(os.Interrupt)
	<-dev.done

	again := spawnPlatform(t, env, "dev", "--listen", addr, "--max-workers", "0", "--insecure-plaintext")
	again.waitLog(t, 60*time.Second, "Hodei is running on "+addr)
	if got := readConfig(t, config); got.Server != "http://"+addr || got.CA != "" {
		t.Errorf("configuration after the restart: %+v, want server http://%s and no CA", got, addr)
	}
	if got := configToken(config)(); got != token {
		t.Errorf("the restart replaced the admin token of the configuration")
	}
	if !strings.Contains(again.logs.String(), "client configuration kept its admin token") ||
		!strings.Contains(again.logs.String(), "Dashboard (one-time sign-in link, valid 24h):\n  http://"+addr+"/ui/login?t=") {
		t.Errorf("restarted dev log lacks the kept token or an http:// sign-in link:\n%s", again.logs.String())
	}
	list("over cleartext")
}
