package platform

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hodei-dev/hodei/internal/provider/kubernetes"
	"github.com/hodei-dev/hodei/internal/store"
)

// KubernetesConfig configures the Kubernetes provider; off when its
// MaxWorkers is 0.
type KubernetesConfig struct {
	MaxWorkers int
	// Kubeconfig is a kubeconfig file; empty: in-cluster configuration.
	Kubeconfig string
	Namespace  string // default: the kubeconfig's, in a cluster the server's own
	// Server is the address worker pods dial (a Service); default the
	// address this replica listens on.
	Server         string
	Image          string // default image of workers whose job names none
	AgentImage     string // image holding the static hodei binary; default hodei:dev
	ServiceAccount string
	// PodOverrides is a YAML file of node selector, tolerations and pod
	// template applied to every worker pod (kubernetes.Overrides).
	PodOverrides string
	Labels       map[string]string
}

// newKubernetesProvider builds the Kubernetes provider and registers it.
func newKubernetesProvider(ctx context.Context, log *slog.Logger, st *store.Store, addr string, env []string, pc Config, agentArgs []string) (*kubernetes.Provider, error) {
	kc := pc.Kubernetes
	install, err := st.InstallationID(ctx)
	if err != nil {
		return nil, err
	}
	var o kubernetes.Overrides
	if kc.PodOverrides != "" {
		if o, err = kubernetes.ReadOverrides(kc.PodOverrides); err != nil {
			return nil, fmt.Errorf("--k8s-pod-overrides: %w", err)
		}
	}
	if kc.Server != "" {
		addr = kc.Server
	}
	k, err := kubernetes.New(kubernetes.Config{Kubeconfig: kc.Kubeconfig, Namespace: kc.Namespace, Server: addr, DefaultImage: kc.Image,
		AgentImage: kc.AgentImage, ServiceAccount: kc.ServiceAccount, Overrides: o, InstallID: install, Logger: log,
		Grace: 20 * time.Second, Args: agentArgs, Env: env})
	if err != nil {
		return nil, err
	}
	if err := st.SeedProvider(ctx, store.Provider{Name: k.Name(), Kind: k.Kind(), MaxWorkers: kc.MaxWorkers,
		IdleTimeout: pc.IdleTimeout, Labels: kc.Labels, AnyImage: true}); err != nil {
		return nil, err
	}
	return k, nil
}
