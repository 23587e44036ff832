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
	"github.com/hodei-dev/hodei/internal/agent"
	"github.com/hodei-dev/hodei/internal/auth"
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
	pc := platform.Config{Listen: "127.0.0.1:0", DatabaseURL: storetest.URL(t), MaxWorkers: 3, AgentLog: io.Discard,
		WorkerLabels: map[string]string{"zone": "a"}, Ready: func(addr string) { readyc <- addr }}
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

	resp, err := http.Get("http://" + addr + "/readyz")
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
	}{{"http://" + metricsAddr + "/metrics", http.StatusOK}, {"http://" + addr + "/metrics", http.StatusUnauthorized}} {
		resp, err := http.Get(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s without a token: %s, want %d", tc.url, resp.Status, tc.want)
		}
	}
	providers := hodeiv1connect.NewProviderServiceClient(auth.WithBearer(agent.HTTPClient(), token), "http://"+addr, connect.WithGRPC())
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
		errc <- platform.Run(t.Context(), storetest.Logger(t), platform.Config{Listener: ln, DatabaseURL: u.String(), AgentLog: io.Discard})
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

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
