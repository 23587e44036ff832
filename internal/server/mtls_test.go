package server

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/pki"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// mtlsServer is a Server serving TLS on loopback with its own CA.
type mtlsServer struct {
	addr string
	st   *store.Store
	ca   *pki.CA
}

func serveTLS(t *testing.T) *mtlsServer {
	t.Helper()
	st := storetest.Open(t)
	ca, err := pki.Ephemeral("test CA")
	if err != nil {
		t.Fatal(err)
	}
	auth, err := pki.NewAuthority(pki.AuthorityConfig{CA: ca, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, st, Config{ReplicaID: "mtls", Registry: prometheus.NewRegistry(), Authority: auth, Logger: storetest.Logger(t)})
	return &mtlsServer{addr: addr, st: st, ca: ca}
}

// worker is an enrolled worker: its identity, key and certificate.
type worker struct {
	id, cred string
	key      crypto.Signer
	cert     *tls.Certificate
}

// client is a WorkerService client over TLS trusting the server's CA and
// presenting cert (nil: none).
func (m *mtlsServer) client(t *testing.T, cert *tls.Certificate) hodeiv1connect.WorkerServiceClient {
	t.Helper()
	var h *pki.Holder
	if cert != nil {
		h = pki.NewHolder(cert)
	}
	cfg, err := pki.ClientTLS(m.ca.PEM, h)
	if err != nil {
		t.Fatal(err)
	}
	return hodeiv1connect.NewWorkerServiceClient(pki.HTTPClient(cfg), "https://"+m.addr, connect.WithGRPC())
}

// enroll enrolls a new worker over TLS with a CSR, as an agent does.
func (m *mtlsServer) enroll(t *testing.T) worker {
	t.Helper()
	ctx := context.Background()
	_, token, err := m.st.NewWorker(ctx, "test", "", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := m.client(t, nil).Enroll(ctx, connect.NewRequest(&hodeiv1.EnrollRequest{BootstrapToken: token, Slots: 1, Csr: csr}))
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	cert, err := pki.CheckWorkerCert([]byte(resp.Msg.Certificate), key, []byte(resp.Msg.TrustBundle), resp.Msg.WorkerId, time.Now())
	if err != nil {
		t.Fatalf("the certificate issued: %v", err)
	}
	return worker{id: resp.Msg.WorkerId, cred: resp.Msg.Credential, key: key, cert: cert}
}

// connectAs opens a Connect stream presenting cert with a hello from w
// and returns the error of its first answer (nil: the server took it).
func (m *mtlsServer) connectAs(t *testing.T, cert *tls.Certificate, w worker) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := m.client(t, cert).Connect(ctx)
	defer stream.CloseRequest()
	if err := stream.Send(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Hello{Hello: &hodeiv1.Hello{WorkerId: w.id, Credential: w.cred}}}); err != nil {
		_, rerr := stream.Receive()
		if rerr != nil {
			return rerr
		}
		return err
	}
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	if first.GetSettings() == nil {
		t.Fatalf("first answer %v, want settings", first)
	}
	return nil
}

// signed is w's key certified by ca for id, valid from notBefore+skew for ttl.
func signed(t *testing.T, ca *pki.CA, key crypto.Signer, id string, from time.Time, ttl time.Duration) *tls.Certificate {
	t.Helper()
	csr, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.SignWorker(csr, id, from, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

// refused fails unless err is a refusal with code and a message
// containing want.
func refused(t *testing.T, err error, code connect.Code, want string) {
	t.Helper()
	if err == nil {
		t.Fatal("connected; want a refusal")
	}
	got := connect.CodeOf(err)
	// A connection the server broke in the handshake surfaces as
	// unavailable, or as canceled when the client's write or read meets
	// it first (connect's code for EPIPE and ECONNRESET).
	if got == connect.CodeCanceled && code == connect.CodeUnavailable && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
		got = connect.CodeUnavailable
	}
	if got != code {
		t.Errorf("err = %v (%v), want code %v", err, connect.CodeOf(err), code)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want it to say %q", err, want)
	}
}

func TestWorkerWithItsCertificateConnects(t *testing.T) {
	t.Parallel()
	m := serveTLS(t)
	w := m.enroll(t)
	if err := m.connectAs(t, w.cert, w); err != nil {
		t.Fatalf("connect: %v", err)
	}
}

func TestPlaintextIsRefused(t *testing.T) {
	t.Parallel()
	m := serveTLS(t)
	w := m.enroll(t)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	c := hodeiv1connect.NewWorkerServiceClient(&http.Client{Transport: &http.Transport{Protocols: p}}, "http://"+m.addr, connect.WithGRPC())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := c.Connect(ctx)
	defer stream.CloseRequest()
	_ = stream.Send(&hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Hello{Hello: &hodeiv1.Hello{WorkerId: w.id, Credential: w.cred}}})
	_, err := stream.Receive()
	refused(t, err, connect.CodeUnavailable, "")
	if connected(t, m.st, w.id) {
		t.Error("the worker is connected over plaintext")
	}
}

func TestWorkerWithoutClientCertificateIsRefused(t *testing.T) {
	t.Parallel()
	m := serveTLS(t)
	w := m.enroll(t)
	refused(t, m.connectAs(t, nil, w), connect.CodeUnauthenticated, "client certificate is required")
}

func TestCertificateFromAnotherCAIsRefused(t *testing.T) {
	t.Parallel()
	m := serveTLS(t)
	w := m.enroll(t)
	other, err := pki.Ephemeral("another CA")
	if err != nil {
		t.Fatal(err)
	}
	// The handshake fails: the server says no more than that.
	refused(t, m.connectAs(t, signed(t, other, w.key, w.id, time.Now(), time.Hour), w), connect.CodeUnavailable, "")
	if connected(t, m.st, w.id) {
		t.Error("the worker is connected")
	}
}

func TestExpiredCertificateIsRefused(t *testing.T) {
	t.Parallel()
	m := serveTLS(t)
	w := m.enroll(t)
	expired := signed(t, m.ca, w.key, w.id, time.Now().Add(-2*time.Hour), time.Hour)
	// The handshake fails: the server says no more than that.
	refused(t, m.connectAs(t, expired, w), connect.CodeUnavailable, "")
	if connected(t, m.st, w.id) {
		t.Error("the worker is connected")
	}
}

func TestTerminatedWorkersCertificateIsRefused(t *testing.T) {
	t.Parallel()
	m := serveTLS(t)
	w := m.enroll(t)
	if _, err := m.st.WorkerGone(context.Background(), w.id, "terminated", "test", true); err != nil {
		t.Fatal(err)
	}
	refused(t, m.connectAs(t, w.cert, w), connect.CodeUnauthenticated, w.id)
	if connected(t, m.st, w.id) {
		t.Error("the terminated worker is connected")
	}
}

func TestCertificateOfWorkerAUsedAsWorkerBIsRefused(t *testing.T) {
	t.Parallel()
	m := serveTLS(t)
	a, b := m.enroll(t), m.enroll(t)
	refused(t, m.connectAs(t, a.cert, b), connect.CodeUnauthenticated, "not the client certificate's worker")
	if connected(t, m.st, b.id) {
		t.Error("worker B is connected")
	}
}

// TestCertificateNotIssuedToTheWorkerIsRefused: a certificate of the
// right CA and identity whose serial the workers table does not record
// (not the one the worker enrolled or rotated to) opens nothing.
func TestCertificateNotIssuedToTheWorkerIsRefused(t *testing.T) {
	t.Parallel()
	m := serveTLS(t)
	w := m.enroll(t)
	refused(t, m.connectAs(t, signed(t, m.ca, w.key, w.id, time.Now(), time.Hour), w), connect.CodeUnauthenticated, w.id)
	if connected(t, m.st, w.id) {
		t.Error("the worker is connected")
	}
}

func connected(t *testing.T, st *store.Store, id string) bool {
	t.Helper()
	ws, err := st.ListWorkers(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.ID == id {
			return w.State == "connected"
		}
	}
	return false
}
