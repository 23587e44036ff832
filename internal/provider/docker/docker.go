// Package docker is the provider that runs workers as Docker containers
// through the Docker Engine API.
//
// Any image works: the host's static hodei binary is bind-mounted
// read-only at /hodei and is the container's entrypoint (`/hodei agent
// --server ADDR`), with the engine's init (tini) as PID 1 so that the
// processes of finished jobs are reaped. The bootstrap token travels in
// the environment. Nothing is pulled: the image must be on the engine.
//
// Every container carries the labels LabelWorkerID, LabelProvider and
// LabelInstallID, so List finds the containers of this provider and
// installation (whatever server process started them) for orphan
// reconciliation, and Events reports when one of them dies.
//
// Containers are not auto-removed, so that Inspect sees a worker that
// exited; Terminate stops (SIGTERM, grace, SIGKILL) and removes them.
// A Provider is safe for concurrent use.
package docker

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/hodei-dev/hodei/internal/provider"
)

// Labels on every container of the provider.
const (
	LabelWorkerID  = "dev.hodei.worker-id"
	LabelProvider  = "dev.hodei.provider"   // the provider's Name
	LabelInstallID = "dev.hodei.install-id" // Config.InstallID
)

// agentPath is where the hodei binary is mounted in the container.
const agentPath = "/hodei"

// Config configures the provider.
type Config struct {
	Name string // default "docker"
	// Host is the engine's address (unix:///var/run/docker.sock,
	// tcp://host:2376, ...). Default: the DOCKER_HOST, DOCKER_TLS_VERIFY
	// and DOCKER_CERT_PATH environment, else the local socket.
	Host string
	// Binary is the hodei binary on the engine's host, mounted read-only
	// at /hodei. It must be statically linked (CGO_ENABLED=0) to run in
	// any image. Required.
	Binary string
	// Server is the address agents dial, as seen from the container (with
	// the default host network, 127.0.0.1:PORT works). Required.
	Server string
	// DefaultImage is the image of a worker whose spec names none; default
	// "hodei-worker:dev" (scripts/build-images.sh).
	DefaultImage string
	// Network is the containers' network mode; default "host".
	Network string
	// InstallID identifies this installation (stable across server
	// restarts): List and Events see only containers labelled with it.
	// Required.
	InstallID string
	// Grace is how long a stopped agent may drain before SIGKILL; default
	// 10s. The engine counts whole seconds: it is rounded up.
	Grace time.Duration
	// Resources are the limits of a worker whose spec sets none (zero:
	// no limit).
	Resources Resources
	Args      []string          // extra agent arguments
	Env       []string          // extra environment (K=V)
	Labels    map[string]string // extra container labels
	Logger    *slog.Logger
}

// Resources limits a worker's container. Zero means no limit.
type Resources struct {
	CPUMillis int64 // 1000 = one CPU
	MemoryMiB int64
}

// Provider starts agents in containers.
type Provider struct {
	cfg Config
	cli *client.Client
	log *slog.Logger
}

var _ provider.Provider = (*Provider)(nil)

type handle struct {
	ContainerID string `json:"container_id"`
}

// New returns the provider. It checks that the binary is a static
// executable but does not contact the engine (see Health).
func New(cfg Config) (*Provider, error) {
	if cfg.Name == "" {
		cfg.Name = "docker"
	}
	if cfg.Server == "" {
		return nil, errors.New("docker provider: Server is required")
	}
	if cfg.InstallID == "" {
		return nil, errors.New("docker provider: InstallID is required")
	}
	if cfg.Binary == "" {
		return nil, errors.New("docker provider: Binary is required")
	}
	if err := checkStatic(cfg.Binary); err != nil {
		return nil, fmt.Errorf("docker provider: %w", err)
	}
	if cfg.DefaultImage == "" {
		cfg.DefaultImage = "hodei-worker:dev"
	}
	if cfg.Network == "" {
		cfg.Network = "host"
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker provider: %w", err)
	}
	return &Provider{cfg: cfg, cli: cli, log: cfg.Logger.With("provider", cfg.Name)}, nil
}

// checkStatic fails unless path is an ELF executable without an
// interpreter (a dynamically linked binary cannot run in a scratch or
// musl image).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("agent binary: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("agent binary %s is dynamically linked; build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}

// Close releases the engine connection.
func (p *Provider) Close() error { return p.cli.Close() }

func (p *Provider) Name() string { return p.cfg.Name }
func (p *Provider) Kind() string { return "docker" }

// Health pings the engine and checks that the default image is present,
// within 5 s at most.
func (p *Provider) Health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := p.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("docker engine: %w", err)
	}
	if _, err := p.cli.ImageInspect(ctx, p.cfg.DefaultImage); err != nil {
		return fmt.Errorf("default image %s: %w", p.cfg.DefaultImage, err)
	}
	return nil
}

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// Provision creates and starts a container of spec.Image (or the default
// image) running the agent, limited to spec.CPUMillis and spec.MemoryMiB
// (each defaulting to Config.Resources).
func (p *Provider) Provision(ctx context.Context, workerID, token string, spec provider.Spec) ([]byte, error) {
	image := spec.Image
	if image == "" {
		image = p.cfg.DefaultImage
	}
	res := Resources{CPUMillis: spec.CPUMillis, MemoryMiB: spec.MemoryMiB}
	if res.CPUMillis <= 0 {
		res.CPUMillis = p.cfg.Resources.CPUMillis
	}
	if res.MemoryMiB <= 0 {
		res.MemoryMiB = p.cfg.Resources.MemoryMiB
	}
	labels := make(map[string]string, len(p.cfg.Labels)+3)
	for k, v := range p.cfg.Labels {
		labels[k] = v
	}
	labels[LabelWorkerID] = workerID
	labels[LabelProvider] = p.cfg.Name
	labels[LabelInstallID] = p.cfg.InstallID
	env := append(append([]string{}, p.cfg.Env...), "HODEI_BOOTSTRAP_TOKEN="+token, "HODEI_WORKER_ID="+workerID)
	stop := int(math.Ceil(p.cfg.Grace.Seconds()))
	useInit := true
	cmd := provider.AgentArgs(p.cfg.Server, p.cfg.Args, spec, res.CPUMillis, res.MemoryMiB)
	opts := client.ContainerCreateOptions{
		Image: image,
		Config: &container.Config{
			Entrypoint:  []string{agentPath},
			Cmd:         cmd,
			Env:         env,
			Labels:      labels,
			StopTimeout: &stop,
		},
		HostConfig: &container.HostConfig{
			NetworkMode: container.NetworkMode(p.cfg.Network),
			Init:        &useInit,
			Mounts:      []mount.Mount{{Type: mount.TypeBind, Source: p.cfg.Binary, Target: agentPath, ReadOnly: true}},
			Resources:   container.Resources{NanoCPUs: res.CPUMillis * 1_000_000, Memory: res.MemoryMiB << 20},
		},
	}
	if validName.MatchString(workerID) {
		opts.Name = "hodei-" + workerID
	}
	created, err := p.cli.ContainerCreate(ctx, opts)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("create container: image %s is not on the engine (the docker provider does not pull): %w", image, err)
		}
		return nil, fmt.Errorf("create container: %w", err)
	}
	if _, err := p.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, rerr := p.cli.ContainerRemove(rctx, created.ID, client.ContainerRemoveOptions{Force: true}); rerr != nil && !cerrdefs.IsNotFound(rerr) {
			p.log.Warn("remove container that did not start", "container_id", created.ID, "worker_id", workerID, "err", rerr)
		}
		return nil, fmt.Errorf("start container: %w", err)
	}
	return json.Marshal(handle{ContainerID: created.ID})
}

func parseHandle(h []byte) (string, error) {
	var hd handle
	if err := json.Unmarshal(h, &hd); err != nil || hd.ContainerID == "" {
		return "", fmt.Errorf("bad handle %q", h)
	}
	return hd.ContainerID, nil
}

// Inspect reports whether the container is running; a container that is
// gone is not running.
func (p *Provider) Inspect(ctx context.Context, h []byte) (bool, error) {
	id, err := parseHandle(h)
	if err != nil {
		return false, err
	}
	r, err := p.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspect container %s: %w", id, err)
	}
	return r.Container.State != nil && r.Container.State.Running, nil
}

// Terminate stops the container (SIGTERM to the agent, which drains;
// SIGKILL after the grace period) and removes it. A container that is
// gone, or being removed, is not an error.
func (p *Provider) Terminate(ctx context.Context, h []byte) error {
	id, err := parseHandle(h)
	if err != nil {
		return err
	}
	stop := int(math.Ceil(p.cfg.Grace.Seconds()))
	if _, err := p.cli.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &stop}); err != nil && !cerrdefs.IsNotFound(err) {
		// Removal below forces the kill; report only if that fails too.
		p.log.Warn("stop container", "container_id", id, "err", err)
	}
	_, err = p.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true})
	if err == nil || cerrdefs.IsNotFound(err) || (cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress")) {
		return nil
	}
	return fmt.Errorf("remove container %s: %w", id, err)
}

// filters selects this provider's containers of this installation.
func (p *Provider) filters() client.Filters {
	return client.Filters{}.Add("label", LabelProvider+"="+p.cfg.Name, LabelInstallID+"="+p.cfg.InstallID)
}

// List returns the containers of this provider and installation in any
// state (running or exited but not removed), whichever server process
// started them.
func (p *Provider) List(ctx context.Context) ([]provider.Instance, error) {
	r, err := p.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: p.filters()})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]provider.Instance, 0, len(r.Items))
	for _, c := range r.Items {
		h, _ := json.Marshal(handle{ContainerID: c.ID})
		out = append(out, provider.Instance{WorkerID: c.Labels[LabelWorkerID], Handle: h})
	}
	return out, nil
}
