package kubetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// NodeConfig configures a Node.
type NodeConfig struct {
	Client kubernetes.Interface
	Name   string // the node's name; default "kubetest-node"
	// Images are the images the node has, each a directory standing for
	// its filesystem: a container's absolute paths that exist under it
	// are run from there. Pods of other images run only commands found
	// in their volumes or on the host.
	Images map[string]string
	Dir    string    // pods' working directories and emptyDir volumes
	Output io.Writer // containers' output; default discarded
	Logger *slog.Logger
}

// Node is test scaffolding standing in for a kubelet (there is none
// here): it schedules every unscheduled pod to itself, runs each pod's
// init containers and then its first container as local processes (the
// command with the pod's environment, secrets resolved, volume paths
// mapped to directories), writes the pod's status back (Running, then
// Succeeded or Failed with the exit code), and on a graceful deletion
// sends SIGTERM, waits the pod's grace period, sends SIGKILL and removes
// the pod, as a kubelet does. Containers share the host's network and
// filesystem: there is no isolation.
type Node struct {
	cfg  NodeConfig
	log  *slog.Logger
	ctx  context.Context
	wg   sync.WaitGroup
	mu   sync.Mutex
	pods map[types.UID]*podRun
}

// podRun is a pod the node runs.
type podRun struct {
	stop     chan int64    // receives the grace period when the pod is deleted
	kill     chan struct{} // closed when the pod is gone: no grace left
	evict    chan string
	done     chan struct{}
	stopping bool
	killed   bool
}

// NewNode returns a node; Run runs it.
func NewNode(cfg NodeConfig) *Node {
	if cfg.Name == "" {
		cfg.Name = "kubetest-node"
	}
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Name), pods: map[types.UID]*podRun{}}
}

// Run registers the node and runs pods until ctx ends; then it kills
// them and returns.
func (n *Node) Run(ctx context.Context) error {
	_, err := n.cfg.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register node: %w", err)
	}
	n.ctx = ctx
	f := informers.NewSharedInformerFactory(n.cfg.Client, 0)
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.sync(obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { n.sync(obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				n.gone(pod)
			}
		},
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
	n.wg.Wait()
	return nil
}

// sync acts on the latest state of a pod.
func (n *Node) sync(pod *corev1.Pod) {
	if pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil {
		n.wg.Go(func() { n.bind(pod) })
		return
	}
	if pod.Spec.NodeName != n.cfg.Name {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.pods[pod.UID]
	if r == nil {
		if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			if pod.DeletionTimestamp != nil { // nothing runs: remove it now
				n.wg.Go(func() { n.remove(pod) })
			}
			return
		}
		r = &podRun{stop: make(chan int64, 1), kill: make(chan struct{}), evict: make(chan string, 1), done: make(chan struct{})}
		n.pods[pod.UID] = r
		n.wg.Go(func() { n.run(pod, r) })
		return
	}
	if pod.DeletionTimestamp != nil && !r.stopping {
		r.stopping = true
		grace := int64(30)
		if pod.DeletionGracePeriodSeconds != nil {
			grace = *pod.DeletionGracePeriodSeconds
		}
		r.stop <- grace
		n.wg.Go(func() {
			<-r.done
			n.remove(pod)
		})
	}
}

// gone kills at once what still runs of a pod removed without grace.
func (n *Node) gone(pod *corev1.Pod) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.pods[pod.UID]
	if r == nil {
		return
	}
	delete(n.pods, pod.UID)
	if !r.killed {
		r.killed = true
		close(r.kill)
	}
}

// Evict ends a running pod as a kubelet under node pressure does: its
// containers are killed and it fails with reason Evicted.
func (n *Node) Evict(namespace, name, message string) error {
	pod, err := n.cfg.Client.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	n.mu.Lock()
	r := n.pods[pod.UID]
	n.mu.Unlock()
	if r == nil {
		return fmt.Errorf("pod %s/%s does not run on node %s", namespace, name, n.cfg.Name)
	}
	select {
	case r.evict <- message:
	default:
	}
	return nil
}

func (n *Node) bind(pod *corev1.Pod) {
	err := n.cfg.Client.CoreV1().Pods(pod.Namespace).Bind(n.ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: n.cfg.Name},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && n.ctx.Err() == nil {
		n.log.Warn("bind pod", "pod", pod.Name, "err", err)
	}
}

// remove deletes a pod whose containers have stopped.
func (n *Node) remove(pod *corev1.Pod) {
	zero := int64(0)
	err := n.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(context.WithoutCancel(n.ctx), pod.Name,
		metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		n.log.Warn("remove pod", "pod", pod.Name, "err", err)
	}
	n.mu.Lock()
	delete(n.pods, pod.UID)
	n.mu.Unlock()
}

// run runs the pod's containers and reports its phase.
func (n *Node) run(pod *corev1.Pod, r *podRun) {
	defer close(r.done)
	dir := filepath.Join(n.cfg.Dir, fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))
	defer os.RemoveAll(dir)
	vols := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil {
			vols[v.Name] = filepath.Join(dir, "volumes", v.Name)
			os.MkdirAll(vols[v.Name], 0o755) //nolint:errcheck // the container fails if it is missing
		}
	}
	for _, c := range pod.Spec.InitContainers {
		code, reason := n.runContainer(pod, r, c, dir, vols, nil)
		if code != 0 {
			n.finish(pod, corev1.PodFailed, c.Name, code, reason)
			return
		}
	}
	c := pod.Spec.Containers[0]
	code, reason := n.runContainer(pod, r, c, dir, vols, func() {
		n.setStatus(pod, func(s *corev1.PodStatus) {
			now := metav1.Now()
			s.Phase, s.HostIP, s.PodIP, s.StartTime = corev1.PodRunning, "127.0.0.1", "127.0.0.1", &now
			s.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}
			s.ContainerStatuses = []corev1.ContainerStatus{{Name: c.Name, Image: c.Image, Ready: true, Started: ptr(true),
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
		})
	})
	phase := corev1.PodSucceeded
	if code != 0 {
		phase = corev1.PodFailed
	}
	n.finish(pod, phase, c.Name, code, reason)
}

func ptr[T any](v T) *T { return &v }

// finish writes the pod's final phase.
func (n *Node) finish(pod *corev1.Pod, phase corev1.PodPhase, container string, code int32, reason string) {
	n.setStatus(pod, func(s *corev1.PodStatus) {
		s.Phase = phase
		if reason == "Evicted" {
			s.Reason, s.Message = "Evicted", "The node was low on resource: memory."
		}
		s.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: metav1.Now()}}
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: container,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, FinishedAt: metav1.Now()}}}}
	})
}

func (n *Node) setStatus(pod *corev1.Pod, mutate func(*corev1.PodStatus)) {
	pods := n.cfg.Client.CoreV1().Pods(pod.Namespace)
	ctx := context.WithoutCancel(n.ctx)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID {
			return nil
		}
		mutate(&cur.Status)
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		n.log.Warn("update pod status", "pod", pod.Name, "err", err)
	}
}

// runContainer runs one container to its end and returns its exit code
// and, when it did not exit on its own, why. started runs once it runs.
func (n *Node) runContainer(pod *corev1.Pod, r *podRun, c corev1.Container, dir string, vols map[string]string, started func()) (int32, string) {
	select {
	case <-r.kill: // the pod is gone: start nothing more
		return 137, "Killed"
	default:
	}
	argv, err := n.command(c, vols)
	if err != nil {
		n.log.Warn("container", "pod", pod.Name, "container", c.Name, "err", err)
		return 128, "ContainerCannotRun"
	}
	env, err := n.env(pod, c)
	if err != nil {
		n.log.Warn("container environment", "pod", pod.Name, "container", c.Name, "err", err)
		return 128, "CreateContainerConfigError"
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	out := &prefixWriter{w: n.cfg.Output, prefix: pod.Name + "/" + c.Name + ": "}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		n.log.Warn("start container", "pod", pod.Name, "container", c.Name, "err", err)
		return 128, "ContainerCannotRun"
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // the exit code is read below
	if started != nil {
		started()
	}
	reason := ""
	pgid := cmd.Process.Pid
	select {
	case <-exited:
	case grace := <-r.stop:
		r.stop <- grace                      // for the containers after this one
		syscall.Kill(-pgid, syscall.SIGTERM) //nolint:errcheck
		select {
		case <-exited:
		case <-time.After(time.Duration(grace) * time.Second):
		case <-r.kill:
		case <-n.ctx.Done():
		}
		syscall.Kill(-pgid, syscall.SIGKILL) //nolint:errcheck
		<-exited
	case <-r.kill:
		syscall.Kill(-pgid, syscall.SIGKILL) //nolint:errcheck
		<-exited
	case <-r.evict:
		syscall.Kill(-pgid, syscall.SIGKILL) //nolint:errcheck
		<-exited
		reason = "Evicted"
	case <-n.ctx.Done():
		syscall.Kill(-pgid, syscall.SIGKILL) //nolint:errcheck
		<-exited
	}
	syscall.Kill(-pgid, syscall.SIGKILL) //nolint:errcheck // what the container left behind
	code := int32(cmd.ProcessState.ExitCode())
	if code < 0 {
		code = 137
	}
	return code, reason
}

// command maps the container's command to the host: volume paths to
// their directories, image paths to the image's directory.
func (n *Node) command(c corev1.Container, vols map[string]string) ([]string, error) {
	if len(c.Command) == 0 {
		return nil, fmt.Errorf("image %s: the test node knows no entrypoint; set a command", c.Image)
	}
	root := n.cfg.Images[c.Image]
	var argv []string
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		argv = append(argv, n.hostPath(a, c, vols, root))
	}
	if !filepath.IsAbs(argv[0]) {
		p, err := exec.LookPath(argv[0])
		if err != nil {
			return nil, err
		}
		argv[0] = p
	}
	return argv, nil
}

func (n *Node) hostPath(a string, c corev1.Container, vols map[string]string, root string) string {
	for _, m := range c.VolumeMounts {
		if a == m.MountPath || strings.HasPrefix(a, m.MountPath+"/") {
			if d, ok := vols[m.Name]; ok {
				return d + strings.TrimPrefix(a, m.MountPath)
			}
		}
	}
	if root != "" && filepath.IsAbs(a) {
		if _, err := os.Stat(filepath.Join(root, a)); err == nil {
			return filepath.Join(root, a)
		}
	}
	return a
}

// env is the container's environment: the host's PATH, HOSTNAME and the
// container's variables, secrets and config maps read now.
func (n *Node) env(pod *corev1.Pod, c corev1.Container) ([]string, error) {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOSTNAME=" + pod.Name}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			ref := e.ValueFrom.SecretKeyRef
			if ref == nil {
				return nil, fmt.Errorf("env %s: only secretKeyRef is supported by the test node", e.Name)
			}
			s, err := n.cfg.Client.CoreV1().Secrets(pod.Namespace).Get(n.ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			b, ok := s.Data[ref.Key]
			if !ok {
				return nil, fmt.Errorf("env %s: secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			v = string(b)
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

// prefixWriter writes lines with a prefix.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
}
