package platform_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/platform"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// TestRun starts a replica, checks that it serves and seeded the process
// provider it was given, and that it stops cleanly when its context ends.
func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readyc := make(chan string, 1)
	errc := make(chan error, 1)
	ca := testCA(t)
	pc := platform.Config{Listen: "127.0.0.1:0", DatabaseURL: storetest.URL(t), MaxWorkers: 3, AgentLog: io.Discard,
		WorkerLabels: map[string]string{"zone": "a"}, Ready: func(addr string) { readyc <- addr }, TLS: platform.TLSConfig{CA: ca}}
	metricsAddr := freeLoopbackAddr(t)
	pc.MetricsListen = metricsAddr
	var token string
	pc.Prepare = func(ctx context.Context, st *store.Store) (err error) {
		_, token, err = st.CreateToken(ctx, "test-admin", []string{"admin"}, 0)
		return err
	}
	go func() { errc <- platform.Run(ctx, storetest.Logger(t), pc) }()
	var addr string
	select {
	case addr = <-readyc:
	case err := <-errc:
		t.Fatalf("run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready after 30s")
	}

	hc, base := client(t, ca)
	// Plaintext gets no answer but the refusal.
	if plain, err := http.Get("http://" + addr + "/readyz"); err != nil {
		t.Fatal(err)
	} else if plain.Body.Close(); plain.StatusCode != http.StatusBadRequest {
		t.Errorf("plaintext /readyz: %s, want 400 (TLS only)", plain.Status)
	}
	resp, err := hc.Get("https://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz: %s", resp.Status)
	}
	// /metrics: open on --metrics-listen, for tokens on the API port.
	for _, tc := range []struct {
		url  string
		want int
	}{{"http://" + metricsAddr + "/metrics", http.StatusOK}, {"https://" + addr + "/metrics", http.StatusUnauthorized}} {
		resp, err := hc.Get(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s without a token: %s, want %d", tc.url, resp.Status, tc.want)
		}
	}
	providers := hodeiv1connect.NewProviderServiceClient(auth.WithBearer(hc, token), base+addr, connect.WithGRPC())
	list, err := providers.ListProviders(ctx, connect.NewRequest(&hodeiv1.ListProvidersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	type seeded struct {
		Name, Kind string
		MaxWorkers int32
		Labels     map[string]string
	}
	var got []seeded
	for _, p := range list.Msg.Providers {
		got = append(got, seeded{p.Name, p.Kind, p.MaxWorkers, p.Labels})
	}
	want := []seeded{{"process", "process", 3, map[string]string{"zone": "a"}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("providers (-want +got):\n%s", diff)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30s after its context ended")
	}
}

// TestRunFailsAtOnceOnAMissingDatabase: waiting cannot create a database,
// so a URL naming one that does not exist ends Run at once (no retries),
// with PostgreSQL's reason, and frees the address.
func TestRunFailsAtOnceOnAMissingDatabase(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(storetest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/no_such_database"
	ln, err := platform.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	errc := make(chan error, 1)
	go func() {
		errc <- platform.Run(t.Context(), storetest.Logger(t), platform.Config{Listener: ln, DatabaseURL: u.String(), AgentLog: io.Discard,
			TLS: platform.TLSConfig{CA: testCA(t)}})
	}()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), `database "no_such_database" does not exist`) {
			t.Errorf("run: %v, want PostgreSQL's reason", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after the database refused it")
	}
	if ln, err := net.Listen("tcp", addr); err != nil {
		t.Errorf("address not freed: %v", err)
	} else {
		ln.Close()
	}
}

func testCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.Ephemeral("test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// client is an HTTP/2 client over TLS trusting ca, and the scheme of its
// URLs.
func client(t *testing.T, ca *pki.CA) (*http.Client, string) {
	t.Helper()
	cfg, err := pki.ClientTLS(ca.PEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pki.HTTPClient(cfg), "https://"
}

// TestRunRefusesToStartWithoutACertificateSource: no CA, no key and no
// --insecure-plaintext is an error that names the flags, before anything
// listens.
func TestRunRefusesToStartWithoutACertificateSource(t *testing.T) {
	t.Parallel()
	err := platform.Run(t.Context(), storetest.Logger(t), platform.Config{Listen: "127.0.0.1:0", DatabaseURL: storetest.URL(t)})
	if err == nil || !strings.Contains(err.Error(), "--ca-key-file") || !strings.Contains(err.Error(), "--insecure-plaintext") {
		t.Errorf("run: %v, want an error naming --ca-key-file and --insecure-plaintext", err)
	}
}

// TestRunServesTheOperatorsCertificate: with --tls-cert-file the replica
// serves the operator's certificate (clients trusting its issuer verify
// it, clients trusting only Hodei's CA do not), and the issuer in its
// chain joins the bundle that agents are given.
func TestRunServesTheOperatorsCertificate(t *testing.T) {
	t.Parallel()
	ca, corporate := testCA(t), testCA(t)
	own, err := corporate.IssueServer([]string{"127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	own.Certificate = append(own.Certificate, corporate.Cert.Raw)
	readyc := make(chan []byte, 1)
	pc := platform.Config{Listen: "127.0.0.1:0", DatabaseURL: storetest.URL(t), AgentLog: io.Discard,
		TLS:     platform.TLSConfig{CA: ca, ServerCert: own},
		Serving: func(addr string, bundle []byte) { readyc <- append([]byte(addr+"\n"), bundle...) }}
	errc := make(chan error, 1)
	go func() { errc <- platform.Run(t.Context(), storetest.Logger(t), pc) }()
	var addr, bundle string
	select {
	case b := <-readyc:
		addr, bundle, _ = strings.Cut(string(b), "\n")
	case err := <-errc:
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(bundle, string(corporate.PEM)) || !strings.Contains(bundle, string(ca.PEM)) {
		t.Error("the bundle lacks the operator's issuer or Hodei's CA")
	}
	hc, base := client(t, corporate)
	resp, err := hc.Get(base + addr + "/healthz")
	if err != nil {
		t.Fatalf("a client trusting the operator's CA: %v", err)
	}
	resp.Body.Close()
	if !resp.TLS.PeerCertificates[0].Equal(own.Leaf) {
		t.Error("the server presented another certificate than the operator's")
	}
	hc, base = client(t, ca)
	if _, err := hc.Get(base + addr + "/healthz"); err == nil {
		t.Error("a client trusting only Hodei's CA verified the operator's certificate")
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
