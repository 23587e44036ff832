package bench

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"time"

	"github.com/hodei-dev/hodei/internal/platform"
	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/provider/docker"
	"github.com/hodei-dev/hodei/internal/provider/kubernetes"
	"github.com/hodei-dev/hodei/internal/provider/kubernetes/kubetest"
	"github.com/hodei-dev/hodei/internal/provider/process"
	"github.com/hodei-dev/hodei/internal/store"
)

// ProvisionConfig configures Provision.
type ProvisionConfig struct {
	Runs        int    // workers per provider; the median is reported
	DockerImage string // image of the Docker workers
	// Binary is the hodei binary the workers run (static for Docker);
	// default this executable.
	Binary string
}

// Provision measures provision request → WorkerRegistered (the agent
// enrolled and its stream is open) for the process provider, when an
// engine is reachable the Docker provider, and when kube-apiserver and
// etcd are built the Kubernetes provider; workers are started one at a
// time and terminated between runs (not timed). It writes a line per
// provider and the result line to out.
func Provision(ctx context.Context, out io.Writer, cfg ProvisionConfig) error {
	if err := cfg.check(); err != nil {
		return err
	}
	self, err := hodeiBinary(cfg.Binary)
	if err != nil {
		return err
	}
	url, tgt, stop, err := startBench(ctx, false, platform.Config{})
	if err != nil {
		return err
	}
	defer stop()
	st, err := store.Open(ctx, store.Config{URL: url})
	if err != nil {
		return err
	}
	defer st.Close()
	proc, err := process.New(process.Config{Server: tgt.addr, Binary: self, Env: []string{"HODEI_CA=" + string(tgt.ca)}})
	if err != nil {
		return err
	}
	pp50, err := measureProvision(ctx, st, proc, provider.Spec{}, cfg.Runs)
	if err != nil {
		return fmt.Errorf("process: %w", err)
	}
	fmt.Fprintf(out, "process: p50 %s\n", pp50.Round(100*time.Microsecond))
	dockerField := "docker_p50_ms=skipped"
	if exec.Command("docker", "version").Run() == nil {
		install, err := st.InstallationID(ctx)
		if err != nil {
			return err
		}
		d, err := docker.New(docker.Config{Binary: self, Server: tgt.addr, Env: []string{"HODEI_CA=" + string(tgt.ca)}, DefaultImage: cfg.DockerImage, InstallID: install, Grace: time.Second})
		if err != nil {
			return fmt.Errorf("docker: %w (build a static binary with `make build`, images with `make images`)", err)
		}
		defer d.Close()
		dp50, err := measureProvision(ctx, st, d, provider.Spec{Image: cfg.DockerImage}, cfg.Runs)
		if err != nil {
			return fmt.Errorf("docker: %w", err)
		}
		fmt.Fprintf(out, "docker: p50 %s\n", dp50.Round(100*time.Microsecond))
		dockerField = fmt.Sprintf("docker_p50_ms=%.1f", ms(dp50))
	}
	k8sField, err := provisionKubernetes(ctx, out, st, self, tgt.addr, tgt.ca, cfg.Runs)
	if err != nil {
		return fmt.Errorf("kubernetes: %w", err)
	}
	fmt.Fprintf(out, "result name=provision process_p50_ms=%.1f %s %s runs=%d\n", ms(pp50), dockerField, k8sField, cfg.Runs)
	return nil
}

// provisionKubernetes measures the Kubernetes provider against a local
// kube-apiserver and etcd (scripts/k8s-binaries.sh builds them), whose
// pods kubetest.Node runs in place of a kubelet: pod and secret created
// → agent registered. Without the binaries it is skipped.
func provisionKubernetes(ctx context.Context, out io.Writer, st *store.Store, self, addr string, ca []byte, runs int) (string, error) {
	bin, err := kubetest.BinDir()
	if err != nil {
		fmt.Fprintf(out, "kubernetes: skipped: %v\n", err)
		return "k8s_p50_ms=skipped", nil
	}
	env, err := kubetest.StartEnv(bin, "", self, kubernetes.AgentBinaryPath, io.Discard)
	if err != nil {
		return "", err
	}
	defer env.Stop()
	install, err := st.InstallationID(ctx)
	if err != nil {
		return "", err
	}
	k, err := kubernetes.New(kubernetes.Config{Kubeconfig: env.Kubeconfig, Namespace: "default", Server: addr, InstallID: install,
		AgentImage: kubetest.AgentImage, Grace: time.Second, Env: []string{"HODEI_CA=" + string(ca)}})
	if err != nil {
		return "", err
	}
	kp50, err := measureProvision(ctx, st, k, provider.Spec{}, runs)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(out, "kubernetes: p50 %s (kube-apiserver %s, test node)\n", kp50.Round(100*time.Microsecond), kubetest.Version)
	return fmt.Sprintf("k8s_p50_ms=%.1f", ms(kp50)), nil
}

func measureProvision(ctx context.Context, st *store.Store, p provider.Provider, spec provider.Spec, runs int) (time.Duration, error) {
	var took []time.Duration
	for i := 0; i < runs; i++ {
		start := time.Now()
		id, token, err := st.NewWorker(ctx, p.Name(), spec.Image, nil, time.Minute)
		if err != nil {
			return 0, err
		}
		h, err := p.Provision(ctx, id, token, spec)
		if err != nil {
			return 0, err
		}
		deadline := time.Now().Add(time.Minute)
		for {
			w, err := st.GetWorker(ctx, id)
			if err != nil {
				return 0, err
			}
			if w.State == "connected" {
				break
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("worker %s did not connect", id)
			}
			time.Sleep(time.Millisecond)
		}
		took = append(took, time.Since(start))
		if err := p.Terminate(ctx, h); err != nil {
			return 0, err
		}
	}
	slices.Sort(took)
	return took[len(took)/2], nil
}
