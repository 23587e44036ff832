package docker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/hodei-dev/hodei/internal/provider"
	"github.com/hodei-dev/hodei/internal/provider/docker"
	"github.com/hodei-dev/hodei/internal/provider/providertest"
	"github.com/hodei-dev/hodei/internal/store/storetest"
	"github.com/hodei-dev/hodei/internal/testbin"
)

// These tests run real agents in real containers of hodei-worker:dev
// (scripts/build-images.sh builds it) against a real server. Without a
// reachable Docker engine they are skipped, loudly.

var (
	hodeiBin   string         // static hodei binary
	cli        *client.Client // for checks from outside the provider
	skipReason string         // set when there is no engine
)

// testLabel marks the containers of a test process (its pid), so that a
// later run removes what a killed run left behind.
const testLabel = "dev.hodei.test-pid"

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var err error
		cli, err = client.New(client.FromEnv, client.WithAPIVersionNegotiation())
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
			cancel()
		}
		if err != nil {
			skipReason = fmt.Sprintf("DOCKER TESTS SKIPPED: no Docker engine reachable (%v)", err)
			fmt.Fprintf(os.Stderr, "\n!!!!!!!!\n!!! %s\n!!!!!!!!\n\n", skipReason)
			return m.Run()
		}
		defer cli.Close()
		removeLeftovers()
		if out, err := exec.Command("bash", "../../../scripts/build-images.sh").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build images: %v\n%s", err, out)
			return 1
		}
		return testbin.Main(m, &hodeiBin, storetest.Main)
	}())
}

// removeLeftovers removes containers of test processes that are gone.
func removeLeftovers() {
	ctx := context.Background()
	r, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", testLabel)})
	if err != nil {
		return
	}
	for _, c := range r.Items {
		pid, _ := strconv.Atoi(c.Labels[testLabel])
		if pid > 0 && syscall.Kill(pid, 0) == nil {
			continue // its test process still runs
		}
		cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}) //nolint:errcheck
	}
}

func needDocker(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

func newProvider(t *testing.T, server, install string) *docker.Provider {
	t.Helper()
	p, err := docker.New(docker.Config{Binary: hodeiBin, Server: server, InstallID: install, Grace: 10 * time.Second,
		Env:    []string{"HODEI_CA=" + string(testbin.CA().PEM)},
		Args:   []string{"--drain-timeout", "5s", "--grace", "5s"},
		Labels: map[string]string{testLabel: strconv.Itoa(os.Getpid())}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// logged is the provider with the container's output in the test log,
// when the test failed, before Terminate removes it.
type logged struct {
	*docker.Provider
	t *testing.T
}

func (l logged) Terminate(ctx context.Context, h []byte) error {
	if l.t.Failed() {
		if id := containerID(h); id != "" {
			if rc, err := cli.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true}); err == nil {
				var b strings.Builder
				stdcopy.StdCopy(&b, &b, rc) //nolint:errcheck
				rc.Close()
				l.t.Logf("container %.12s output:\n%s", id, b.String())
			}
		}
	}
	return l.Provider.Terminate(ctx, h)
}

func containerID(h []byte) string {
	_, rest, _ := strings.Cut(string(h), `"container_id":"`)
	id, _, _ := strings.Cut(rest, `"`)
	return id
}

func TestConformance(t *testing.T) {
	needDocker(t)
	providertest.Run(t, providertest.Harness{
		New: func(t *testing.T, server, install string) provider.Provider {
			return logged{newProvider(t, server, install), t}
		},
	})
}

// start provisions a worker of p and waits until it is connected.
func start(t *testing.T, plat *providertest.Platform, p *docker.Provider, spec provider.Spec) (id string, h []byte) {
	t.Helper()
	ctx := context.Background()
	id, token, err := plat.NewWorker(ctx, p.Name(), spec.Image)
	if err != nil {
		t.Fatal(err)
	}
	h, err = p.Provision(ctx, id, token, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logged{p, t}.Terminate(context.Background(), h) }) //nolint:errcheck
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := plat.WaitConnected(wctx, id); err != nil {
		t.Fatal(err)
	}
	return id, h
}

func TestContainerSettings(t *testing.T) {
	needDocker(t)
	t.Parallel()
	plat := providertest.StartPlatform(t)
	install := providertest.NewInstall()
	p := newProvider(t, plat.Addr, install)
	id, h := start(t, plat, p, provider.Spec{Image: "hodei-test-x:dev", CPUMillis: 500, MemoryMiB: 128})
	r, err := cli.ContainerInspect(context.Background(), containerID(h), client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Container
	type settings struct {
		Image       string
		Entrypoint  []string
		Labels      map[string]string
		Env         []string
		Init        bool
		AutoRemove  bool
		NetworkMode string
		NanoCPUs    int64
		Memory      int64
		Mounts      []mount.Mount
	}
	got := settings{Image: c.Config.Image, Entrypoint: c.Config.Entrypoint, Labels: c.Config.Labels, Init: c.HostConfig.Init != nil && *c.HostConfig.Init,
		AutoRemove: c.HostConfig.AutoRemove, NetworkMode: string(c.HostConfig.NetworkMode), NanoCPUs: c.HostConfig.NanoCPUs,
		Memory: c.HostConfig.Memory, Mounts: c.HostConfig.Mounts}
	for _, e := range c.Config.Env {
		if strings.HasPrefix(e, "HODEI_") {
			k, _, _ := strings.Cut(e, "=")
			got.Env = append(got.Env, k)
		}
	}
	slices.Sort(got.Env)
	want := settings{
		Image:      "hodei-test-x:dev",
		Entrypoint: []string{"/hodei"},
		Labels: map[string]string{docker.LabelWorkerID: id, docker.LabelProvider: "docker", docker.LabelInstallID: install,
			testLabel: strconv.Itoa(os.Getpid()), "dev.hodei.image": "test-x", "dev.hodei.inputs": c.Config.Labels["dev.hodei.inputs"]},
		Env:         []string{"HODEI_BOOTSTRAP_TOKEN", "HODEI_CA", "HODEI_WORKER_ID"},
		Init:        true,
		NetworkMode: "host",
		NanoCPUs:    500_000_000,
		Memory:      128 << 20,
		Mounts:      []mount.Mount{{Type: mount.TypeBind, Source: hodeiBin, Target: "/hodei", ReadOnly: true}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("container settings (-want +got):\n%s", diff)
	}
	if !slices.Contains(c.Config.Cmd, plat.Addr) || c.Config.Cmd[0] != "agent" {
		t.Errorf("Cmd = %q, want `agent --server %s ...`", c.Config.Cmd, plat.Addr)
	}
	if strings.Contains(strings.Join(c.Config.Cmd, " "), "HODEI_BOOTSTRAP_TOKEN") {
		t.Errorf("the token is in the command line")
	}
}

func TestConfigResourcesAreTheDefaultLimits(t *testing.T) {
	needDocker(t)
	t.Parallel()
	p, err := docker.New(docker.Config{Binary: hodeiBin, Server: "127.0.0.1:1", InstallID: providertest.NewInstall(),
		Resources: docker.Resources{CPUMillis: 250, MemoryMiB: 64}, Labels: map[string]string{testLabel: strconv.Itoa(os.Getpid())}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tc := range []struct {
		spec         provider.Spec
		nano, memory int64
	}{
		{provider.Spec{}, 250_000_000, 64 << 20},
		{provider.Spec{CPUMillis: 2000}, 2_000_000_000, 64 << 20},
	} {
		h, err := p.Provision(context.Background(), providertest.NewInstall(), "token", tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		r, err := cli.ContainerInspect(context.Background(), containerID(h), client.ContainerInspectOptions{})
		if err := errors.Join(err, p.Terminate(context.Background(), h)); err != nil {
			t.Fatal(err)
		}
		if hc := r.Container.HostConfig; hc.NanoCPUs != tc.nano || hc.Memory != tc.memory {
			t.Errorf("spec %+v: NanoCPUs=%d Memory=%d, want %d and %d", tc.spec, hc.NanoCPUs, hc.Memory, tc.nano, tc.memory)
		}
	}
}

// TestTerminateIsGraceful checks that the agent gets SIGTERM through the
// container's init and exits on its own (exit code 0, not 137).
func TestTerminateIsGraceful(t *testing.T) {
	needDocker(t)
	t.Parallel()
	plat := providertest.StartPlatform(t)
	p := newProvider(t, plat.Addr, providertest.NewInstall())
	_, h := start(t, plat, p, provider.Spec{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ev := cli.Events(ctx, client.EventsListOptions{Filters: client.Filters{}.Add("container", containerID(h)).Add("event", "die")})
	begin := time.Now()
	if err := p.Terminate(ctx, h); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ev.Messages:
		if code := m.Actor.Attributes["exitCode"]; code != "0" {
			t.Errorf("agent exit code %s, want 0 (a drained exit on SIGTERM)", code)
		}
	case err := <-ev.Err:
		t.Fatalf("events: %v", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("Terminate took %s: the agent did not stop on SIGTERM", took)
	}
}

func TestEventsReportsDeathsOfThisInstallationOnly(t *testing.T) {
	needDocker(t)
	t.Parallel()
	plat := providertest.StartPlatform(t)
	ours := newProvider(t, plat.Addr, providertest.NewInstall())
	other := newProvider(t, plat.Addr, providertest.NewInstall())

	ctx, cancel := context.WithCancel(context.Background())
	died := make(chan string, 10)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := ours.Events(ctx, func(id string) { died <- id }); err != nil {
			t.Errorf("Events: %v", err)
		}
	})
	defer func() { cancel(); wg.Wait() }()

	idOurs, hOurs := start(t, plat, ours, provider.Spec{})
	_, hOther := start(t, plat, other, provider.Spec{})
	// The other installation's container dies first: were it reported, it
	// would come before ours.
	for _, h := range [][]byte{hOther, hOurs} {
		if _, err := cli.ContainerKill(context.Background(), containerID(h), client.ContainerKillOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case id := <-died:
		if id != idOurs {
			t.Fatalf("Events reported %s, want %s (ours) first", id, idOurs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no death reported within 30s")
	}

	// A dead container is not running but still listed (it is not
	// removed automatically) until Terminate removes it.
	if running, err := ours.Inspect(context.Background(), hOurs); err != nil || running {
		t.Errorf("Inspect of a killed worker = %v, %v; want false, nil", running, err)
	}
	if ins, err := ours.List(context.Background()); err != nil || len(ins) != 1 || ins[0].WorkerID != idOurs {
		t.Errorf("List with a dead worker = %v, %v; want it", ins, err)
	}
	if err := ours.Terminate(context.Background(), hOurs); err != nil {
		t.Fatal(err)
	}
	if ins, err := ours.List(context.Background()); err != nil || len(ins) != 0 {
		t.Errorf("List after Terminate = %v, %v; want none", ins, err)
	}
}

func TestMissingImageFailsAndLeavesNothing(t *testing.T) {
	needDocker(t)
	t.Parallel()
	p := newProvider(t, "127.0.0.1:1", providertest.NewInstall())
	_, err := p.Provision(context.Background(), "w1", "token", provider.Spec{Image: "hodei-no-such-image:dev"})
	if err == nil || !strings.Contains(err.Error(), "hodei-no-such-image:dev") {
		t.Fatalf("Provision of a missing image: %v, want an error naming it", err)
	}
	if ins, err := p.List(context.Background()); err != nil || len(ins) != 0 {
		t.Fatalf("List = %v, %v; want none", ins, err)
	}
}

func TestInspectAndTerminateOfUnknownContainer(t *testing.T) {
	needDocker(t)
	t.Parallel()
	p := newProvider(t, "127.0.0.1:1", providertest.NewInstall())
	h := []byte(`{"container_id":"0000000000000000000000000000000000000000000000000000000000000000"}`)
	if running, err := p.Inspect(context.Background(), h); err != nil || running {
		t.Errorf("Inspect = %v, %v; want false, nil", running, err)
	}
	if err := p.Terminate(context.Background(), h); err != nil {
		t.Errorf("Terminate: %v", err)
	}
	if _, err := p.Inspect(context.Background(), []byte("garbage")); err == nil {
		t.Errorf("Inspect of a bad handle: no error")
	}
}

func TestHealth(t *testing.T) {
	needDocker(t)
	t.Parallel()
	p := newProvider(t, "127.0.0.1:1", providertest.NewInstall())
	if err := p.Health(context.Background()); err != nil {
		t.Fatalf("Health: %v", err)
	}
	t.Logf("API version negotiated with the engine: %s", cli.ClientVersion())
	bad, err := docker.New(docker.Config{Binary: hodeiBin, Server: "127.0.0.1:1", InstallID: "x", DefaultImage: "hodei-no-such-image:dev"})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.Health(context.Background()); err == nil {
		t.Errorf("Health with a missing default image: no error")
	}
	down, err := docker.New(docker.Config{Binary: hodeiBin, Server: "127.0.0.1:1", InstallID: "x", Host: "unix:///nonexistent/docker.sock"})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if err := down.Health(context.Background()); err == nil {
		t.Errorf("Health without an engine: no error")
	}
}

func TestNewRejectsDynamicBinary(t *testing.T) {
	_, err := docker.New(docker.Config{Binary: "/bin/ls", Server: "127.0.0.1:1", InstallID: "x"})
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("New with a dynamic binary: %v, want an error asking for a static build", err)
	}
}
