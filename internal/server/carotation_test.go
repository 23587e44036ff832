package server

import (
	"bytes"
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hodei-dev/hodei/internal/agent"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestCARotationReachesEveryWorker walks a CA rotation with a real
// agent on its stream: a new CA joins the bundle (the worker is re-issued
// a certificate that brings it the new bundle), then signs (the worker's
// certificate and the server's are re-issued under it), then the old CA
// leaves the bundle; the stream stays open throughout, and the agent's
// next connection presents its certificate of the new CA.
func TestCARotationReachesEveryWorker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := storetest.Open(t)
	oldCA, newCA := ephemeral(t), ephemeral(t)
	if err := st.AddAuthority(ctx, pki.Fingerprint(oldCA.Cert), oldCA.PEM, oldCA.Cert.NotAfter); err != nil {
		t.Fatal(err)
	}
	auth, err := pki.NewAuthority(pki.AuthorityConfig{CA: oldCA, Hosts: []string{"127.0.0.1"}, CertTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{ReplicaID: "ca-rotation", Registry: prometheus.NewRegistry(), Authority: auth, Logger: storetest.Logger(t),
		CertCheckInterval: 100 * time.Millisecond, RenewBefore: time.Minute}, st, st.NewBus(eventbus.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 3)
	run := func(f func(context.Context) error) { go func() { f(ctx); done <- struct{}{} }() } //nolint:errcheck
	run(func(ctx context.Context) error { return s.Serve(ctx, ln) })
	run(s.Run)
	run(s.RunCerts)
	id, token, err := st.NewWorker(ctx, "test", "", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{Servers: []string{ln.Addr().String()}, BootstrapToken: token, CA: oldCA.PEM, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan struct{})
	go func() { a.Run(ctx); close(agentDone) }() //nolint:errcheck
	defer func() { cancel(); <-agentDone; <-done; <-done; <-done }()
	waitFor(t, "worker connected", func() bool { return s.workers.Connected(id) })

	// 1. The new CA joins the bundle: the worker is re-issued a
	// certificate of the old CA that brings the new bundle.
	if err := st.AddAuthority(ctx, pki.Fingerprint(newCA.Cert), newCA.PEM, newCA.Cert.NotAfter); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a rotation bringing the new bundle", func() bool { return count(workerEvents(t, st, id), "CertificateRotated") == 1 })
	// 2. The new CA signs: the worker's certificate and the server's
	// are re-issued under it.
	auth.SetCA(newCA)
	waitFor(t, "the worker's certificate of the new CA", func() bool {
		return bytes.Equal(connCert(s, id).issuer, newCA.Cert.SubjectKeyId)
	})
	waitFor(t, "the server's certificate of the new CA", func() bool {
		return bytes.Equal(auth.ServerCert().AuthorityKeyId, newCA.Cert.SubjectKeyId)
	})
	// 3. The old CA leaves the bundle.
	if _, err := st.RetireOlderAuthorities(ctx, pki.Fingerprint(newCA.Cert), time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bundle without the old CA", func() bool {
		b, err := st.TrustBundle(ctx)
		return err == nil && !bytes.Contains(b, oldCA.PEM) && bytes.Contains(auth.Bundle(), newCA.PEM) && !bytes.Contains(auth.Bundle(), oldCA.PEM)
	})
	if types := workerEvents(t, st, id); slices.Contains(types, "WorkerReconnected") || slices.Contains(types, "WorkerDisconnected") {
		t.Fatalf("worker events %v: the stream was interrupted", types)
	}
	// The next connection presents the certificate of the new CA, which
	// the server (trusting only the new CA now) takes.
	s.workers.mu.Lock()
	s.workers.conns[id].close()
	s.workers.mu.Unlock()
	waitFor(t, "the worker reconnected", func() bool {
		return slices.Contains(workerEvents(t, st, id), "WorkerReconnected") && s.workers.Connected(id)
	})
	if !bytes.Equal(connCert(s, id).issuer, newCA.Cert.SubjectKeyId) {
		t.Error("the worker reconnected with a certificate of another CA")
	}
}

func ephemeral(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.Ephemeral("test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func connCert(s *Server, id string) certState {
	s.workers.mu.Lock()
	c := s.workers.conns[id]
	s.workers.mu.Unlock()
	if c == nil {
		return certState{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert
}

func workerEvents(t *testing.T, st *store.Store, id string) []string {
	t.Helper()
	rows, err := st.SQLForTests().Query(context.Background(), "SELECT type FROM events WHERE aggregate_id = $1 ORDER BY id", id)
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

func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
