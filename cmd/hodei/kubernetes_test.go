package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/platform"
	"github.com/hodei-dev/hodei/internal/provider/kubernetes"
	"github.com/hodei-dev/hodei/internal/provider/kubernetes/kubetest"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// The Kubernetes tests run servers whose provider starts workers as pods
// on a real kube-apiserver and etcd (scripts/k8s-binaries.sh builds them;
// `make test-heavy` runs these tests), with kubetest.Node running the
// pods in place of a kubelet. Without the built binaries they skip loudly.

var kube struct {
	sync.Once
	env  *kubetest.Env
	skip string
}

// needKube starts the shared cluster on first use; stopKube stops it.
func needKube(t *testing.T) *kubetest.Env {
	t.Helper()
	kube.Do(func() {
		bin, err := kubetest.BinDir()
		if err != nil {
			kube.skip = err.Error()
			return
		}
		if kube.env, err = kubetest.StartEnv(bin, "", hodeiBin, kubernetes.AgentBinaryPath, os.Stderr); err != nil {
			kube.skip = "start the test cluster: " + err.Error()
		}
	})
	if kube.skip != "" {
		fmt.Fprintf(os.Stderr, "\n*** KUBERNETES TESTS SKIPPED: %s ***\n\n", kube.skip)
		t.Skip("KUBERNETES TESTS SKIPPED: " + kube.skip)
	}
	return kube.env
}

func stopKube() {
	if kube.env != nil {
		kube.env.Stop()
	}
}

// kubeNamespace creates a namespace of the test's own.
func kubeNamespace(t *testing.T, e *kubetest.Env) string {
	t.Helper()
	name := "t-" + randomHexForTest(4)
	if _, err := e.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Workers whose server is gone would retry forever: the node kills
	// the pods deleted at once.
	t.Cleanup(func() {
		zero := int64(0)
		e.Client.CoreV1().Pods(name).DeleteCollection(context.Background(), metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{}) //nolint:errcheck
	})
	return name
}

func randomHexForTest(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// kubeObjects counts the pods and secrets of a namespace.
func kubeObjects(t *testing.T, e *kubetest.Env, ns string) (pods, secrets int) {
	t.Helper()
	p, err := e.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.Client.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(p.Items), len(s.Items)
}

// TestKubernetesJobRunsInAPodAndIdlePodsGo: a job runs end to end in a
// worker pod; once the worker is idle past the idle timeout, its pod and
// its secret are deleted.
func TestKubernetesJobRunsInAPodAndIdlePodsGo(t *testing.T) {
	e := needKube(t)
	t.Parallel()
	ns := kubeNamespace(t, e)
	c := inProcessWith(t, platform.Config{IdleTimeout: time.Second,
		Kubernetes: platform.KubernetesConfig{MaxWorkers: 2, Kubeconfig: e.Kubeconfig, Namespace: ns}})
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"echo", "hello"}})
	j := waitJob(t, c, id, 60*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job: %v %s", j.State, j.Message)
	}
	if out, _ := jobLogs(t, c, id); string(out) != "hello\n" {
		t.Errorf("job output %q, want hello", out)
	}
	eventually(t, 30*time.Second, "the idle worker's pod and secret deleted", func() bool {
		pods, secrets := kubeObjects(t, e, ns)
		return pods == 0 && secrets == 0
	})
}

// TestKubernetesPodEndedMidJobIsRetried: the pod running attempt 1 is
// deleted at once (as by `kubectl delete --force`), or evicted by its
// node; the pod informer fails the attempt as worker_lost well before
// the lease, and attempt 2 succeeds in another pod.
func TestKubernetesPodEndedMidJobIsRetried(t *testing.T) {
	e := needKube(t)
	for _, tc := range []struct {
		name string
		end  func(ns, pod string) error
	}{
		{"deleted", func(ns, pod string) error {
			zero := int64(0)
			return e.Client.CoreV1().Pods(ns).Delete(context.Background(), pod, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		}},
		{"evicted", func(ns, pod string) error { return e.Node.Evict(ns, pod, "memory pressure") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := kubeNamespace(t, e)
			const lease = 30 * time.Second
			c := inProcessWith(t, platform.Config{IdleTimeout: time.Minute, Lease: lease,
				Kubernetes: platform.KubernetesConfig{MaxWorkers: 2, Kubeconfig: e.Kubeconfig, Namespace: ns}})
			marker := filepath.Join(t.TempDir(), "marker")
			script := fmt.Sprintf(`if [ -e %[1]s ]; then echo attempt $HODEI_ATTEMPT; exit 0; fi; touch %[1]s; exec sleep 60`, marker)
			id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", script},
				Retry: &hodeiv1.RetryPolicy{MaxAttempts: 2, InitialBackoff: durationpb.New(10 * time.Millisecond)}})
			waitJob(t, c, id, 60*time.Second, func(j *hodeiv1.Job) bool { return j.State == hodeiv1.JobState_JOB_STATE_RUNNING })
			eventually(t, 10*time.Second, "attempt 1 started", func() bool { _, err := os.Stat(marker); return err == nil })
			pods, err := e.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
			if err != nil || len(pods.Items) != 1 {
				t.Fatalf("pods: %v, %v; want one", pods, err)
			}
			ended := time.Now()
			if err := tc.end(ns, pods.Items[0].Name); err != nil {
				t.Fatal(err)
			}
			j := waitJob(t, c, id, 60*time.Second, isFinal)
			if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 2 {
				t.Fatalf("job: %v with %d attempts, want SUCCEEDED on attempt 2", j.State, len(j.Attempts))
			}
			a1 := j.Attempts[0]
			lost := a1.FinishedAt.AsTime().Sub(ended)
			if a1.FailureClass != hodeiv1.FailureClass_FAILURE_CLASS_WORKER_LOST || lost > lease/3 {
				t.Fatalf("attempt 1: %v %s after its pod was %s; want worker_lost at once (lease %s)", a1.FailureClass, lost, tc.name, lease)
			}
			t.Logf("attempt 1 lost %s after its pod was %s (lease %s)", lost.Round(time.Millisecond), tc.name, lease)
		})
	}
}

// TestKubernetesPodDeletedGracefullyLetsItsJobFinish: a worker pod
// deleted with its grace period (as by `kubectl delete pod`) has its
// agent drain: the job running in it finishes there, once, and is not
// taken for lost while the pod terminates.
func TestKubernetesPodDeletedGracefullyLetsItsJobFinish(t *testing.T) {
	e := needKube(t)
	t.Parallel()
	ns := kubeNamespace(t, e)
	c := inProcessWith(t, platform.Config{IdleTimeout: time.Minute, Lease: 30 * time.Second,
		Kubernetes: platform.KubernetesConfig{MaxWorkers: 2, Kubeconfig: e.Kubeconfig, Namespace: ns}})
	marker := filepath.Join(t.TempDir(), "marker")
	id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sh", "-c", fmt.Sprintf(`touch %s; sleep 3; echo attempt $HODEI_ATTEMPT`, marker)},
		Retry: &hodeiv1.RetryPolicy{MaxAttempts: 2, InitialBackoff: durationpb.New(10 * time.Millisecond)}})
	eventually(t, 60*time.Second, "the job started", func() bool { _, err := os.Stat(marker); return err == nil })
	pods, err := e.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods: %v, %v; want one", pods, err)
	}
	if err := e.Client.CoreV1().Pods(ns).Delete(context.Background(), pods.Items[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, c, id, 60*time.Second, isFinal)
	if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 1 {
		t.Fatalf("job: %v with %d attempts (%v), want SUCCEEDED at its first attempt, in the draining pod", j.State, len(j.Attempts), j.Attempts)
	}
}

// TestKubernetesOrphanPodsTerminated: the server is killed with SIGKILL
// while worker pods run jobs; a new server on the same database (another
// address, so the old workers cannot reconnect) deletes their pods and
// secrets: no orphan remains.
func TestKubernetesOrphanPodsTerminated(t *testing.T) {
	e := needKube(t)
	t.Parallel()
	ns := kubeNamespace(t, e)
	dbURL := storetest.URL(t)
	args := []string{"--max-workers", "0", "--k8s-max-workers", "2", "--k8s-kubeconfig", e.Kubeconfig, "--k8s-namespace", ns,
		"--lease", "2s", "--idle-timeout", "1s"}
	a := startServerOn(t, dbURL, freeAddr(t), args...)
	for range 2 {
		if r := a.hodei(t, "job", "submit", "--", "sleep", "30"); r.code != 0 {
			t.Fatalf("submit: %+v", r)
		}
	}
	st := openStore(t, dbURL)
	eventually(t, 60*time.Second, "both jobs running", func() bool {
		var n int
		if err := st.SQLForTests().QueryRow(context.Background(), "SELECT count(*) FROM jobs WHERE state = 'running'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 2
	})
	if pods, secrets := kubeObjects(t, e, ns); pods != 2 || secrets != 2 {
		t.Fatalf("%d pods and %d secrets, want 2 of each", pods, secrets)
	}
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	startServerOn(t, dbURL, freeAddr(t), args...)
	eventually(t, 60*time.Second, "no orphan pod or secret left", func() bool {
		pods, secrets := kubeObjects(t, e, ns)
		return pods == 0 && secrets == 0
	})
}

// TestKubernetesEphemeralPodsTakeOneJobEach: with the provider in
// ephemeral mode every job runs in a pod of its own, whose agent retires
// after it; the ended pods are deleted with their secrets.
func TestKubernetesEphemeralPodsTakeOneJobEach(t *testing.T) {
	e := needKube(t)
	t.Parallel()
	ns := kubeNamespace(t, e)
	c, addr := inProcessAt(t, platform.Config{IdleTimeout: time.Minute,
		Kubernetes: platform.KubernetesConfig{MaxWorkers: 2, Kubeconfig: e.Kubeconfig, Namespace: ns}})
	providers := hodeiv1connect.NewProviderServiceClient(apiClient(addr), "https://"+addr, connect.WithGRPC())
	on := true
	if _, err := providers.UpdateProvider(context.Background(), connect.NewRequest(&hodeiv1.UpdateProviderRequest{Name: "kubernetes", Ephemeral: &on})); err != nil {
		t.Fatal(err)
	}
	workers := map[string]bool{}
	for i := range 3 {
		id := submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}})
		j := waitJob(t, c, id, 60*time.Second, isFinal)
		if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 1 {
			t.Fatalf("job %d: %v with %d attempts", i, j.State, len(j.Attempts))
		}
		if w := j.Attempts[0].WorkerId; workers[w] {
			t.Fatalf("worker %s ran a second job", w)
		} else {
			workers[w] = true
		}
	}
	eventually(t, 30*time.Second, "every ephemeral pod and secret deleted", func() bool {
		pods, secrets := kubeObjects(t, e, ns)
		return pods == 0 && secrets == 0
	})
}
