package main

import (
	"bytes"
	"context"
	"crypto"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/store/storetest"
	"github.com/hodei-dev/hodei/internal/testbin"
)

// operatorCert writes a server certificate for 127.0.0.1 issued by the
// test run's CA, and its key, as an operator's own certificate.
func operatorCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	c, err := testbin.CA().IssueServer([]string{"127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.EncodeKey(c.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pki.EncodeCert(c.Leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestServerRefusesABadConfiguration: `hodei server` given a file,
// address or provider setting it cannot use exits 1 at start with an
// error naming it, and registers no provider it could not build.
func TestServerRefusesABadConfiguration(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbURL := storetest.URL(t)
	junk := filepath.Join(dir, "junk")
	readable := filepath.Join(dir, "readable.key")
	for f, mode := range map[string]os.FileMode{junk: 0o600, readable: 0o644} {
		if err := os.WriteFile(f, []byte("k1 "+strings.Repeat("ab", 32)+"\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	serverCert, _ := operatorCert(t, dir)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	missing := filepath.Join(dir, "missing")
	kubeconfig := unreachableKubeconfig(t)
	for _, tc := range []struct {
		db   string
		args []string
		want string
	}{
		{dbURL, []string{"--trust-ca-file", junk}, "hodei: CAs to trust: "},
		{dbURL, []string{"--trust-ca-file", serverCert}, "hodei: CAs to trust: CN=hodei server,O=Hodei is not a CA certificate"},
		{dbURL, []string{"--job-type-defaults", missing}, "hodei: load job types: open " + missing},
		{dbURL, []string{"--job-type-defaults", junk}, "hodei: load job types from " + junk + ": "},
		{dbURL, []string{"--secret-key-file", readable}, "hodei: secret key file " + readable + ": mode -rw-r--r-- lets others read it; chmod 600"},
		{dbURL, []string{"--metrics-listen", taken.Addr().String()}, "hodei: --metrics-listen: listen on " + taken.Addr().String() + ": address already in use"},
		{dbURL, []string{"--otlp-endpoint", "ftp://collector"}, `hodei: otlp endpoint "ftp://collector": must be an http:// or https:// URL with a host`},
		{dbURL, []string{"--docker-max-workers", "1", "--docker-binary", "/bin/sh"}, "hodei: docker provider: "},
		{dbURL, []string{"--k8s-max-workers", "1", "--k8s-kubeconfig", missing}, "hodei: kubernetes provider: kubernetes provider: kubeconfig " + `"` + missing + `"`},
		{dbURL, []string{"--k8s-max-workers", "1", "--k8s-kubeconfig", kubeconfig, "--k8s-pod-overrides", junk}, "hodei: kubernetes provider: --k8s-pod-overrides: "},
		{"postgres://hodei@" + freeAddr(t) + "/none", []string{"--db-wait", "300ms"}, "hodei: database not reachable after "},
		{"", nil, "hodei: HODEI_DATABASE_URL is not set (use `hodei dev` for an embedded PostgreSQL)"},
		// Failures that waiting cannot mend end the start at once.
		{"postgres://hodei@127.0.0.1:%zz/none", nil, "hodei: parse database url: "},
		{withDB(dbURL, "no_such_database"), nil, `database "no_such_database" does not exist`},
	} {
		env := append(os.Environ(), "HODEI_DATABASE_URL="+tc.db)
		r := runHodei(t, env, append([]string{"server", "--listen", freeAddr(t), "--max-workers", "0"}, tc.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("hodei server %s: exit %d, stderr:\n%s\nwant exit 1 and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
	st := openStore(t, dbURL)
	if n := queryOne[int64](t, st, "SELECT count(*) FROM providers"); n != 0 {
		t.Errorf("%d providers registered by servers that refused to start, want none", n)
	}
}

// TestServerWithTheOperatorsCertificate: `hodei server` with
// --tls-cert-file serves that certificate (a client trusting only its
// issuer works), creates its CA key (mode 0600) where --ca-key-file says,
// and records the CAs of --trust-ca-file in the trust bundle it gives
// workers.
func TestServerWithTheOperatorsCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbURL, addr := storetest.URL(t), freeAddr(t)
	certFile, keyFile := operatorCert(t, dir)
	other, err := pki.Ephemeral("other CA")
	if err != nil {
		t.Fatal(err)
	}
	trust := filepath.Join(dir, "trust.pem")
	if err := os.WriteFile(trust, other.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	caKey := filepath.Join(dir, "keys", "ca.key")
	env := append(noTestCA(filepath.Join(dir, "config.json")), "HODEI_DATABASE_URL="+dbURL)
	sp := spawnPlatform(t, env, "server", "--listen", addr, "--max-workers", "0",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--ca-key-file", caKey, "--trust-ca-file", trust)
	sp.waitLog(t, 30*time.Second, "hodei server listening")

	if fi, err := os.Stat(caKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key %s: %v, want a file of mode 0600", caKey, err)
	}
	// The test CA issued the operator's certificate; the server's own CA
	// (of the new key) did not.
	r := runHodei(t, append(os.Environ(), "HODEI_CONFIG="+filepath.Join(dir, "none.json"), "HODEI_TOKEN="+dbToken(t, dbURL)),
		"job", "list", "--server", addr, "--ca-file", os.Getenv("HODEI_CA_FILE"))
	if r.code != 0 {
		t.Errorf("job list trusting the issuer of the operator's certificate: %+v", r)
	}
	st := openStore(t, dbURL)
	bundle, err := st.TrustBundle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(bundle, bytes.TrimSpace(other.PEM)) {
		t.Errorf("trust bundle lacks the CA of --trust-ca-file:\n%s", bundle)
	}
}

// withDB is url naming database name instead.
func withDB(url, name string) string {
	i := strings.LastIndex(url, "/")
	rest := ""
	if q := strings.IndexByte(url[i:], '?'); q >= 0 {
		rest = url[i+q:]
	}
	return url[:i+1] + name + rest
}

// TestServerWaitingForItsDatabaseAnswersHealth: while the database is
// down, a server whose CA is known only by its key (its certificate is in
// the database) answers /healthz in cleartext; one with the operator's
// certificate answers it over TLS with that certificate.
func TestServerWaitingForItsDatabaseAnswersHealth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := operatorCert(t, dir)
	down := "HODEI_DATABASE_URL=postgres://hodei@" + freeAddr(t) + "/none"
	for _, tc := range []struct {
		name string
		args []string
		get  func(addr string) (*http.Response, error)
	}{
		{"CA key only", nil, func(addr string) (*http.Response, error) { return http.Get("http://" + addr + "/healthz") }},
		{"operator's certificate", []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile}, func(addr string) (*http.Response, error) {
			hc, base := testbin.Client(addr)
			return hc.Get(base + "/healthz")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := freeAddr(t)
			args := append([]string{"server", "--listen", addr, "--ca-key-file", filepath.Join(dir, tc.name, "ca.key")}, tc.args...)
			p := spawnPlatform(t, append(noTestCA(filepath.Join(dir, "config.json")), down), args...)
			p.waitLog(t, 20*time.Second, "attempt=1")
			resp, err := tc.get(addr)
			if err != nil {
				t.Fatalf("GET /healthz while waiting: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /healthz while waiting: %s, want 200", resp.Status)
			}
			_ = p.cmd.Process.Signal(os.Interrupt)
			<-p.done
			if code := p.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("server stopped while waiting: exit %d, want 0", code)
			}
		})
	}
}
