package kubernetes_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/provider/kubernetes"
	"github.com/hodei-dev/hodei/internal/provider/kubernetes/kubetest"
	"github.com/hodei-dev/hodei/internal/provider/providertest"
	"github.com/hodei-dev/hodei/internal/store/storetest"
	"github.com/hodei-dev/hodei/internal/testbin"
)

// These tests run real agents in pods on a real kube-apiserver and etcd
// (built from source by scripts/k8s-binaries.sh; `make test-heavy`
// builds them), with kubetest.Node standing in for the kubelet. Without
// the built binaries they are skipped, loudly.

var (
	hodeiBin   string
	cluster    *kubetest.Cluster
	node       *kubetest.Node
	skipReason string
	// output is where pods' output goes: the running test's log.
	output = &switchWriter{w: io.Discard}
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		bin, err := kubetest.BinDir()
		if err != nil {
			skipReason = "KUBERNETES TESTS SKIPPED: " + err.Error()
			fmt.Fprintf(os.Stderr, "\n!!!!!!!!\n!!! %s\n!!!!!!!!\n\n", skipReason)
			return m.Run()
		}
		return testbin.Main(m, &hodeiBin, func(m *testing.M) int {
			stop, err := startCluster(bin)
			if err != nil {
				fmt.Fprintln(os.Stderr, "kubernetes test cluster:", err)
				return 1
			}
			defer stop()
			return storetest.Main(m)
		})
	}())
}

// startCluster starts the API server and the test node, whose image
// hodei:dev holds the binary under test.
func startCluster(bin string) (func(), error) {
	e, err := kubetest.StartEnv(bin, "", hodeiBin, kubernetes.AgentBinaryPath, output)
	if err != nil {
		return nil, err
	}
	cluster, node = e.Cluster, e.Node
	return e.Stop, nil
}

func needCluster(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// switchWriter sends what pods print to the log of the tests running.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}

// namespace creates a namespace for the test.
func namespace(t *testing.T, name string) string {
	t.Helper()
	_, err := cluster.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return name
}

func newProvider(t *testing.T, cfg kubernetes.Config) *kubernetes.Provider {
	t.Helper()
	if cfg.Kubeconfig == "" {
		cfg.Kubeconfig = cluster.Kubeconfig
	}
	if cfg.Grace == 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.Args == nil {
		cfg.Args = []string{"--drain-timeout", "5s", "--grace", "5s"}
	}
	// The platforms of these tests serve TLS from the test CA.
	cfg.Env = append(cfg.Env, "HODEI_CA="+string(testbin.CA().PEM))
	p, err := kubernetes.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	needCluster(t)
	output.set(providertest.Writer(t, ""))
	ns := namespace(t, "conformance")
	providertest.Run(t, providertest.Harness{
		New: func(t *testing.T, server, install string) provider.Provider {
			return newProvider(t, kubernetes.Config{Server: server, InstallID: install, Namespace: ns})
		},
	})
}

// start provisions a worker of p and waits until it is connected.
func start(t *testing.T, plat *providertest.Platform, p *kubernetes.Provider, spec provider.Spec) (id string, h []byte) {
	t.Helper()
	ctx := context.Background()
	id, token, err := plat.NewWorker(ctx, p.Name(), spec.Image)
	if err != nil {
		t.Fatal(err)
	}
	if h, err = p.Provision(ctx, id, token, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Terminate(context.Background(), h) }) //nolint:errcheck
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := plat.WaitConnected(wctx, id); err != nil {
		t.Fatal(err)
	}
	return id, h
}

func podOf(t *testing.T, ns, workerID string) *corev1.Pod {
	t.Helper()
	pods, err := cluster.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: kubernetes.LabelWorkerID + "=" + workerID})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of worker %s: %v (err %v), want one", workerID, pods, err)
	}
	return &pods.Items[0]
}

func TestEventsReportsDeletedEvictedAndFailedPods(t *testing.T) {
	needCluster(t)
	output.set(providertest.Writer(t, ""))
	plat := providertest.StartPlatform(t)
	ns := namespace(t, "events")
	p := newProvider(t, kubernetes.Config{Server: plat.Addr, InstallID: providertest.NewInstall(), Namespace: ns})
	other := newProvider(t, kubernetes.Config{Server: plat.Addr, InstallID: providertest.NewInstall(), Namespace: ns})

	ctx, cancel := context.WithCancel(context.Background())
	died := make(chan string, 20)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := p.Events(ctx, func(id string) { died <- id }); err != nil {
			t.Errorf("Events: %v", err)
		}
	})
	defer func() { cancel(); wg.Wait() }()

	deleted, _ := start(t, plat, p, provider.Spec{})
	evicted, _ := start(t, plat, p, provider.Spec{})
	_, hOther := start(t, plat, other, provider.Spec{})
	// The other installation's pod goes first: were it reported, it would
	// come before ours.
	if err := other.Terminate(context.Background(), hOther); err != nil {
		t.Fatal(err)
	}
	reported := map[string]bool{}
	for _, tc := range []struct {
		id  string
		end func() error
	}{
		{deleted, func() error {
			return cluster.Client.CoreV1().Pods(ns).Delete(context.Background(), podOf(t, ns, deleted).Name, metav1.DeleteOptions{})
		}},
		{evicted, func() error { return node.Evict(ns, podOf(t, ns, evicted).Name, "memory pressure") }},
	} {
		if err := tc.end(); err != nil {
			t.Fatal(err)
		}
		// A worker may be reported more than once (its pod deleted, then
		// gone); the hook is idempotent. The next new one must be tc.id.
	wait:
		for {
			select {
			case id := <-died:
				if reported[id] {
					continue
				}
				if id != tc.id {
					t.Fatalf("Events reported %s, want %s", id, tc.id)
				}
				reported[id] = true
				break wait
			case <-time.After(30 * time.Second):
				t.Fatalf("the end of worker %s was not reported within 30s", tc.id)
			}
		}
	}
	// The evicted pod stays, failed, until Terminate removes it.
	pod := podOf(t, ns, evicted)
	if pod.Status.Phase != corev1.PodFailed || pod.Status.Reason != "Evicted" {
		t.Errorf("evicted pod: phase %s reason %q, want Failed Evicted", pod.Status.Phase, pod.Status.Reason)
	}
	if running, err := p.Inspect(context.Background(), []byte(fmt.Sprintf(`{"namespace":%q,"pod":%q}`, ns, pod.Name))); err != nil || running {
		t.Errorf("Inspect of an evicted pod = %v, %v; want false, nil", running, err)
	}
}

func TestHealth(t *testing.T) {
	needCluster(t)
	ns := namespace(t, "health")
	p := newProvider(t, kubernetes.Config{Server: "127.0.0.1:1", InstallID: "x", Namespace: ns})
	ctx := context.Background()
	if err := p.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	// The quota controller is not running here: the test writes the
	// quota's status as it would.
	q, err := cluster.Client.CoreV1().ResourceQuotas(ns).Create(ctx, &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "pods"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: mustQuantity("2")}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q.Status = corev1.ResourceQuotaStatus{Hard: q.Spec.Hard, Used: corev1.ResourceList{corev1.ResourcePods: mustQuantity("2")}}
	if _, err := cluster.Client.CoreV1().ResourceQuotas(ns).UpdateStatus(ctx, q, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Health(ctx); err == nil || !strings.Contains(err.Error(), "quota pods is exhausted") {
		t.Errorf("Health with an exhausted quota: %v, want an error naming it", err)
	}
	down := newProvider(t, kubernetes.Config{REST: brokenREST(), Server: "127.0.0.1:1", InstallID: "x"})
	if err := down.Health(ctx); err == nil {
		t.Errorf("Health without an API server: no error")
	}
}
