// Package kubernetes is the provider that runs workers as Kubernetes pods
// through client-go.
//
// A worker is one pod (see pod.go): the job's image (or the default
// worker image) is the main container; an init container copies the
// static hodei binary out of the small hodei image into an emptyDir, and
// `/hodei/hodei agent --server ADDR` is the main container's command. The
// bootstrap token is in a Secret owned by the pod, so the cluster's
// garbage collector deletes it with the pod (Terminate deletes it as
// well). Pods never restart; their termination grace period is the
// provider's Grace, and SIGTERM is the agent's drain, so no preStop hook
// is needed.
//
// Every pod carries the labels LabelWorkerID, LabelProvider and
// LabelInstallID: List finds the pods of this provider and installation
// (whatever server process started them) for orphan reconciliation, and
// Events runs a pod informer that reports pods that failed, ended, were
// evicted or deleted, so that their attempts fail at once.
//
// A Provider is safe for concurrent use.
package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hodei-dev/hodei/internal/provider"
)

// Labels on every pod and secret of the provider.
const (
	LabelWorkerID  = "hodei.dev/worker-id"
	LabelProvider  = "hodei.dev/provider"   // the provider's Name
	LabelInstallID = "hodei.dev/install-id" // Config.InstallID
)

// Config configures the provider.
type Config struct {
	Name string // default "kubernetes"
	// Kubeconfig is a kubeconfig file; empty: the in-cluster
	// configuration (the pod's service account). REST, when set, is used
	// instead of both.
	Kubeconfig string
	REST       *rest.Config
	// Namespace of the pods; default the kubeconfig context's namespace,
	// in a cluster the server pod's own, else "default".
	Namespace string
	// Server is the address agents dial, as seen from the pods (a
	// Service: hodei.hodei.svc:7070). Required.
	Server string
	// DefaultImage is the image of a worker whose spec names none;
	// default "hodei-worker:dev".
	DefaultImage string
	// AgentImage holds the static hodei binary at AgentBinaryPath, copied
	// by the init container with its `cp`; default "hodei:dev".
	AgentImage string
	// ServiceAccount of the worker pods; default the namespace's default.
	ServiceAccount string
	// Overrides are applied to every pod (node selector, tolerations,
	// pod template); see ParseOverrides.
	Overrides Overrides
	// InstallID identifies this installation (stable across server
	// restarts): List and Events see only pods labelled with it. Required.
	InstallID string
	// Grace is the pods' termination grace period: how long a stopped
	// agent may drain before SIGKILL; default 10s, rounded up to seconds.
	Grace time.Duration
	// Resources are the requests and limits of a worker whose spec sets
	// none (zero: none).
	Resources Resources
	Args      []string // extra agent arguments
	Env       []string // extra environment (K=V)
	Logger    *slog.Logger
}

// Resources are a worker pod's CPU and memory, requested and limited.
type Resources struct {
	CPUMillis int64 // 1000 = one CPU
	MemoryMiB int64
}

// AgentBinaryPath is where the hodei binary is in the AgentImage.
const AgentBinaryPath = "/usr/local/bin/hodei"

// Provider starts agents in pods.
type Provider struct {
	cfg Config
	cs  kubernetes.Interface
	log *slog.Logger
}

var _ provider.Provider = (*Provider)(nil)

type handle struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
}

// New returns the provider. It reads the configuration but does not
// contact the API server (see Health).
func New(cfg Config) (*Provider, error) {
	if cfg.Name == "" {
		cfg.Name = "kubernetes"
	}
	if cfg.Server == "" {
		return nil, errors.New("kubernetes provider: Server is required")
	}
	if cfg.InstallID == "" {
		return nil, errors.New("kubernetes provider: InstallID is required")
	}
	if cfg.DefaultImage == "" {
		cfg.DefaultImage = "hodei-worker:dev"
	}
	if cfg.AgentImage == "" {
		cfg.AgentImage = "hodei:dev"
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rc, ns, err := restConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes provider: %w", err)
	}
	if cfg.Namespace == "" {
		cfg.Namespace = ns
	}
	// client-go's default of 5 requests/s would make a scale-up of 20
	// workers (3 requests each) take 12 s.
	rc = rest.CopyConfig(rc)
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = 50, 100
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes provider: %w", err)
	}
	return &Provider{cfg: cfg, cs: cs, log: cfg.Logger.With("provider", cfg.Name)}, nil
}

// restConfig returns the client configuration and the default namespace.
func restConfig(cfg Config) (*rest.Config, string, error) {
	if cfg.REST != nil {
		return cfg.REST, "default", nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if cfg.Kubeconfig != "" {
		rules = &clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.Kubeconfig}
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig() // in a cluster without a kubeconfig: the service account
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig %q: %w", cfg.Kubeconfig, err)
	}
	ns, _, err := cc.Namespace()
	if err != nil || ns == "" {
		ns = "default"
	}
	return rc, ns, nil
}

func (p *Provider) Name() string { return p.cfg.Name }
func (p *Provider) Kind() string { return "kubernetes" }

// Namespace is the namespace of the provider's pods.
func (p *Provider) Namespace() string { return p.cfg.Namespace }

// Health checks the API server's /readyz and that the namespace's
// resource quotas leave room for one more pod, within 5 s at most.
func (p *Provider) Health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var code int
	body, err := p.cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code).Raw()
	if err != nil {
		return fmt.Errorf("kubernetes API server /readyz: %w", err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("kubernetes API server /readyz: %d %s", code, body)
	}
	quotas, err := p.cs.CoreV1().ResourceQuotas(p.cfg.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("resource quotas of namespace %s: %w", p.cfg.Namespace, err)
	}
	for _, q := range quotas.Items {
		for _, name := range []corev1.ResourceName{corev1.ResourcePods, "count/pods"} {
			hard, ok := q.Status.Hard[name]
			if !ok {
				continue
			}
			if used := q.Status.Used[name]; used.Cmp(hard) >= 0 {
				return fmt.Errorf("namespace %s: resource quota %s is exhausted (%s: %s used of %s)", p.cfg.Namespace, q.Name, name, used.String(), hard.String())
			}
		}
	}
	return nil
}

// Provision creates the worker's Secret and pod, then makes the pod the
// Secret's owner. The pod's containers start once the Secret exists.
func (p *Provider) Provision(ctx context.Context, workerID, token string, spec provider.Spec) ([]byte, error) {
	pod := p.pod(workerID, spec)
	secrets := p.cs.CoreV1().Secrets(p.cfg.Namespace)
	sec, err := secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Labels: p.labels(workerID)},
		Data:       map[string][]byte{secretKey: []byte(token)},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create secret %s/%s: %w", p.cfg.Namespace, pod.Name, err)
	}
	created, err := p.cs.CoreV1().Pods(p.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		p.deleteSecret(context.WithoutCancel(ctx), sec.Name)
		return nil, fmt.Errorf("create pod %s/%s: %w", p.cfg.Namespace, pod.Name, err)
	}
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: created.Name, UID: created.UID}
	sec.OwnerReferences = []metav1.OwnerReference{owner}
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		// Terminate deletes the secret anyway: only the collector's
		// safety net is missing.
		p.log.Warn("make the pod own its secret", "pod", created.Name, "worker_id", workerID, "err", err)
	}
	return json.Marshal(handle{Namespace: created.Namespace, Pod: created.Name})
}

func (p *Provider) labels(workerID string) map[string]string {
	return map[string]string{LabelWorkerID: workerID, LabelProvider: p.cfg.Name, LabelInstallID: p.cfg.InstallID}
}

func parseHandle(h []byte) (handle, error) {
	var hd handle
	if err := json.Unmarshal(h, &hd); err != nil || hd.Pod == "" || hd.Namespace == "" {
		return handle{}, fmt.Errorf("bad handle %q", h)
	}
	return hd, nil
}

// Inspect reports whether the pod is pending or running and not being
// deleted; a pod that is gone is not running.
func (p *Provider) Inspect(ctx context.Context, h []byte) (bool, error) {
	hd, err := parseHandle(h)
	if err != nil {
		return false, err
	}
	pod, err := p.cs.CoreV1().Pods(hd.Namespace).Get(ctx, hd.Pod, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get pod %s/%s: %w", hd.Namespace, hd.Pod, err)
	}
	return alive(pod), nil
}

// alive reports whether a pod is starting or running its agent.
func alive(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil {
		return false
	}
	return pod.Status.Phase == corev1.PodPending || pod.Status.Phase == corev1.PodRunning || pod.Status.Phase == ""
}

// Terminate deletes the pod with the grace period (SIGTERM to the agent,
// which drains; SIGKILL after it), waits until it is gone and deletes
// its Secret. A pod that is gone, or being deleted, is not an error.
func (p *Provider) Terminate(ctx context.Context, h []byte) error {
	hd, err := parseHandle(h)
	if err != nil {
		return err
	}
	grace := int64(math.Ceil(p.cfg.Grace.Seconds()))
	pods := p.cs.CoreV1().Pods(hd.Namespace)
	if err := pods.Delete(ctx, hd.Pod, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", hd.Namespace, hd.Pod, err)
	}
	p.deleteSecret(ctx, hd.Pod)
	// The node stops the containers and removes the pod: wait for it, up
	// to the grace period and a margin, polling.
	wctx, cancel := context.WithTimeout(ctx, p.cfg.Grace+30*time.Second)
	defer cancel()
	for {
		_, err := pods.Get(wctx, hd.Pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("pod %s/%s not gone %s after its deletion: %w", hd.Namespace, hd.Pod, p.cfg.Grace+30*time.Second, wctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Provider) deleteSecret(ctx context.Context, name string) {
	err := p.cs.CoreV1().Secrets(p.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		p.log.Warn("delete worker secret", "secret", name, "err", err)
	}
}

// selector selects this provider's pods of this installation.
func (p *Provider) selector() string {
	return labels.SelectorFromSet(labels.Set{LabelProvider: p.cfg.Name, LabelInstallID: p.cfg.InstallID}).String()
}

// List returns the pods of this provider and installation in any phase,
// whichever server process started them.
func (p *Provider) List(ctx context.Context) ([]provider.Instance, error) {
	r, err := p.cs.CoreV1().Pods(p.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: p.selector()})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	out := make([]provider.Instance, 0, len(r.Items))
	for _, pod := range r.Items {
		h, _ := json.Marshal(handle{Namespace: pod.Namespace, Pod: pod.Name})
		out = append(out, provider.Instance{WorkerID: pod.Labels[LabelWorkerID], Handle: h})
	}
	return out, nil
}
