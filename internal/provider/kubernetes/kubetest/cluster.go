// Package kubetest is test scaffolding for the Kubernetes provider: a
// real etcd and kube-apiserver started from binaries built from source
// (scripts/k8s-binaries.sh caches them by version), and Node, a minimal
// stand-in for a kubelet that runs pods as local processes. It is not a
// way to run Hodei: production pods run on a real cluster's nodes.
package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Version is the Kubernetes release the tests run against; tools/k8s
// pins the same (a test checks it).
const Version = "v1.37.2"

// BinDir is where scripts/k8s-binaries.sh caches kube-apiserver and
// etcd: $HODEI_K8S_BIN_DIR, else ~/.cache/hodei/k8s/<Version>. It fails,
// saying how to build them, when they are absent.
func BinDir() (string, error) {
	dir := os.Getenv("HODEI_K8S_BIN_DIR")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".cache", "hodei", "k8s", Version)
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s not built (scripts/k8s-binaries.sh builds it, or make test-heavy): %w", b, err)
		}
	}
	return dir, nil
}

// Cluster is a running etcd and kube-apiserver on loopback ports, with
// authorization off and a static admin token.
type Cluster struct {
	// Kubeconfig is a kubeconfig file for the admin.
	Kubeconfig string
	REST       *rest.Config
	Client     kubernetes.Interface

	procs []*exec.Cmd
	dir   string
}

// Start starts etcd and kube-apiserver from binDir with their state in
// a new directory under dir, and waits until the API server is ready.
// Their output goes to log. Stop stops them.
func Start(ctx context.Context, binDir, dir string, log io.Writer) (_ *Cluster, err error) {
	c := &Cluster{}
	if c.dir, err = os.MkdirTemp(dir, "kube-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	if err := c.start(filepath.Join(binDir, "etcd"), log, "--name", "kubetest", "--data-dir", filepath.Join(c.dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "kubetest="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn"); err != nil {
		return nil, err
	}
	token := randomHex(16)
	if err := os.WriteFile(filepath.Join(c.dir, "tokens.csv"), []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, err
	}
	key, err := writeKey(filepath.Join(c.dir, "sa.key"))
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(ports[2])
	if err := c.start(filepath.Join(binDir, "kube-apiserver"), log,
		"--etcd-servers", etcdURL, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", port,
		"--cert-dir", filepath.Join(c.dir, "certs"), "--token-auth-file", filepath.Join(c.dir, "tokens.csv"),
		"--authorization-mode", "AlwaysAllow", "--endpoint-reconciler-type", "none",
		"--disable-admission-plugins", "ServiceAccount", "--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", key, "--service-account-signing-key-file", key,
		"--service-cluster-ip-range", "10.0.0.0/24", "--enable-priority-and-fairness=false", "--profiling=false", "-v", "0"); err != nil {
		return nil, err
	}
	c.REST = &rest.Config{Host: "https://127.0.0.1:" + port, BearerToken: token, QPS: 200, Burst: 400,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	if c.Client, err = kubernetes.NewForConfig(c.REST); err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, []byte(kubeconfig(c.REST.Host, token)), 0o600); err != nil {
		return nil, err
	}
	return c, c.waitReady(ctx)
}

// kubeconfig is a kubeconfig for the admin on host.
func kubeconfig(host, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: kubetest
  context: {cluster: kubetest, user: admin, namespace: default}
current-context: kubetest
`, host, token)
}

func (c *Cluster) start(bin string, log io.Writer, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	c.procs = append(c.procs, cmd)
	return nil
}

// waitReady waits up to a minute for /readyz.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		var code int
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code).Raw()
		if err == nil && code == 200 {
			return nil
		}
		last = err
		for _, p := range c.procs {
			if p.ProcessState != nil {
				return fmt.Errorf("%s exited: %s", filepath.Base(p.Path), p.ProcessState)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %w (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop kills the API server and etcd and removes their state.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
		_ = p.Wait()
	}
	c.procs = nil
	if c.dir != "" {
		os.RemoveAll(c.dir)
	}
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// writeKey writes a new RSA key (the service account token signer).
func writeKey(path string) (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	if b == nil {
		return "", errors.New("encode key")
	}
	return path, os.WriteFile(path, b, 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
