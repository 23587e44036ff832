package kubernetes_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/provider/kubernetes"
	"github.com/hodei-dev/hodei/internal/provider/kubernetes/kubetest"
	"github.com/hodei-dev/hodei/internal/provider/providertest"
)

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// brokenREST points at a port where nothing listens.
func brokenREST() *rest.Config { return &rest.Config{Host: "https://127.0.0.1:1"} }

func TestPodSettings(t *testing.T) {
	needCluster(t)
	output.set(providertest.Writer(t, ""))
	plat := providertest.StartPlatform(t)
	ns := namespace(t, "settings")
	install := providertest.NewInstall()
	p := newProvider(t, kubernetes.Config{Server: plat.Addr, InstallID: install, Namespace: ns, ServiceAccount: "builder", Env: []string{"TEAM=build"}})
	id, h := start(t, plat, p, provider.Spec{Image: "hodei-test-x:dev", CPUMillis: 500, MemoryMiB: 128, Ephemeral: true})
	ctx := context.Background()
	pod := podOf(t, ns, id)

	wantLabels := map[string]string{kubernetes.LabelWorkerID: id, kubernetes.LabelProvider: "kubernetes", kubernetes.LabelInstallID: install}
	if diff := cmp.Diff(wantLabels, pod.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	s := pod.Spec
	if s.RestartPolicy != corev1.RestartPolicyNever || s.TerminationGracePeriodSeconds == nil || *s.TerminationGracePeriodSeconds != 10 ||
		s.ServiceAccountName != "builder" {
		t.Errorf("restartPolicy %s, grace %v, service account %q; want Never, 10, builder", s.RestartPolicy, s.TerminationGracePeriodSeconds, s.ServiceAccountName)
	}
	if len(s.InitContainers) != 1 || s.InitContainers[0].Image != "hodei:dev" ||
		!slices.Equal(s.InitContainers[0].Command, []string{"cp", kubernetes.AgentBinaryPath, "/hodei/hodei"}) {
		t.Errorf("init containers %+v, want one of hodei:dev copying the binary to /hodei/hodei", s.InitContainers)
	}
	c := s.Containers[0]
	if c.Image != "hodei-test-x:dev" || !slices.Equal(c.Command, []string{"/hodei/hodei"}) {
		t.Errorf("main container: image %s command %q", c.Image, c.Command)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"agent --server " + plat.Addr, "--max-jobs 1", "--cpu-millis 500", "--memory-mib 128"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	wantRes := corev1.ResourceList{corev1.ResourceCPU: mustQuantity("500m"), corev1.ResourceMemory: mustQuantity("128Mi")}
	for name, got := range map[string]corev1.ResourceList{"requests": c.Resources.Requests, "limits": c.Resources.Limits} {
		if got.Cpu().Cmp(wantRes[corev1.ResourceCPU]) != 0 || got.Memory().Cmp(wantRes[corev1.ResourceMemory]) != 0 {
			t.Errorf("%s = %v, want %v", name, got, wantRes)
		}
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	tok := env["HODEI_BOOTSTRAP_TOKEN"]
	if tok.Value != "" || tok.ValueFrom == nil || tok.ValueFrom.SecretKeyRef == nil || tok.ValueFrom.SecretKeyRef.Name != pod.Name {
		t.Errorf("HODEI_BOOTSTRAP_TOKEN = %+v, want a reference to the secret %s", tok, pod.Name)
	}
	if env["HODEI_WORKER_ID"].Value != id || env["TEAM"].Value != "build" {
		t.Errorf("env %+v, want HODEI_WORKER_ID=%s and TEAM=build", c.Env, id)
	}

	sec, err := cluster.Client.CoreV1().Secrets(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != pod.UID || len(sec.Data["token"]) == 0 {
		t.Errorf("secret owners %+v, keys %d; want the pod as owner and a token", sec.OwnerReferences, len(sec.Data))
	}
	if err := p.Terminate(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Client.CoreV1().Secrets(ns).Get(ctx, pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("secret after Terminate: %v, want not found", err)
	}
}

func TestOverridesAreApplied(t *testing.T) {
	needCluster(t)
	output.set(providertest.Writer(t, ""))
	plat := providertest.StartPlatform(t)
	ns := namespace(t, "overrides")
	o, err := kubernetes.ParseOverrides([]byte(`
nodeSelector: {pool: ci}
tolerations: [{key: dedicated, operator: Equal, value: ci, effect: NoSchedule}]
podTemplate:
  metadata:
    labels: {team: build, hodei.dev/worker-id: forged}
    annotations: {cost-center: "42"}
  spec:
    activeDeadlineSeconds: 3600
    containers:
    - name: worker
      env: [{name: REGION, value: eu}]
      command: [/bin/false]
`))
	if err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, kubernetes.Config{Server: plat.Addr, InstallID: providertest.NewInstall(), Namespace: ns, Overrides: o})
	id, _ := start(t, plat, p, provider.Spec{}) // it connects: the template did not replace the agent
	pod := podOf(t, ns, id)
	// The API server's DefaultTolerationSeconds admission adds its own.
	if pod.Spec.NodeSelector["pool"] != "ci" || !slices.ContainsFunc(pod.Spec.Tolerations, func(t corev1.Toleration) bool { return t.Key == "dedicated" && t.Value == "ci" }) {
		t.Errorf("node selector %v, tolerations %v", pod.Spec.NodeSelector, pod.Spec.Tolerations)
	}
	if pod.Labels["team"] != "build" || pod.Labels[kubernetes.LabelWorkerID] != id || pod.Annotations["cost-center"] != "42" {
		t.Errorf("labels %v, annotations %v: want the template's and the worker's own id", pod.Labels, pod.Annotations)
	}
	if d := pod.Spec.ActiveDeadlineSeconds; d == nil || *d != 3600 {
		t.Errorf("activeDeadlineSeconds = %v, want 3600", d)
	}
	c := pod.Spec.Containers[0]
	var names []string
	for _, e := range c.Env {
		names = append(names, e.Name)
	}
	if !slices.Contains(names, "REGION") || !slices.Contains(names, "HODEI_BOOTSTRAP_TOKEN") || c.Image != "hodei-worker:dev" {
		t.Errorf("worker container env %q image %s: want REGION merged in, the token kept, the default image", names, c.Image)
	}
}

func TestParseOverridesNamesBadFields(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nodeSelectr: {a: b}", "nodeSelectr"},
		{"podTemplate: {spec: {containerz: []}}", "containerz"},
		{"tolerations: {key: x}", "tolerations"},
	} {
		if _, err := kubernetes.ParseOverrides([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseOverrides(%q) = %v, want an error naming %s", tc.in, err, tc.want)
		}
	}
}

func TestVersionMatchesTheToolsModule(t *testing.T) {
	b, err := os.ReadFile("../../../tools/k8s/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	pinned := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		pinned = pinned || len(f) >= 2 && f[0] == "k8s.io/kubernetes" && f[1] == kubetest.Version
	}
	if !pinned {
		t.Errorf("tools/k8s/go.mod does not pin k8s.io/kubernetes %s (kubetest.Version)", kubetest.Version)
	}
}

// TestProvisionIsNotThrottled: a scale-up of 20 workers (3 requests
// each) is not held back by client-go's default of 5 requests/s, which
// would stretch it past 10 s. The pods' init containers fail (their
// image is not on the node), so no agent runs.
func TestProvisionIsNotThrottled(t *testing.T) {
	needCluster(t)
	ns := namespace(t, "throttle")
	p := newProvider(t, kubernetes.Config{Server: "127.0.0.1:1", InstallID: providertest.NewInstall(), Namespace: ns, AgentImage: "hodei-missing:dev"})
	ctx := context.Background()
	began := time.Now()
	var handles [][]byte
	for range 20 {
		h, err := p.Provision(ctx, providertest.NewInstall(), "token", provider.Spec{})
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, h)
	}
	took := time.Since(began)
	for _, h := range handles {
		if err := p.Terminate(ctx, h); err != nil {
			t.Error(err)
		}
	}
	if took > 5*time.Second {
		t.Fatalf("20 provisions took %s: throttled by the client", took)
	}
	t.Logf("20 provisions in %s", took.Round(time.Millisecond))
}
