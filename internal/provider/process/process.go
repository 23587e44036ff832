// Package process is the provider that runs workers as local `hodei agent`
// subprocesses, each in its own process group, killed with the server.
package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hodei-dev/hodei/internal/provider"
)

// Config configures the provider.
type Config struct {
	Name   string   // default "process"
	Binary string   // the hodei binary; default os.Executable()
	Server string   // address agents dial
	Args   []string // extra agent arguments
	Env    []string // extra environment
	Grace  time.Duration
	Stderr io.Writer // agents' stderr; default discarded
}

// Provider starts agents as subprocesses.
type Provider struct {
	cfg  Config
	mu   sync.Mutex
	cmds map[int]*exec.Cmd
}

type handle struct {
	PID int `json:"pid"`
}

// New returns the provider.
func New(cfg Config) (*Provider, error) {
	if cfg.Name == "" {
		cfg.Name = "process"
	}
	if cfg.Binary == "" {
		b, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("process provider: %w", err)
		}
		cfg.Binary = b
	}
	if cfg.Server == "" {
		return nil, errors.New("process provider: Server is required")
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	return &Provider{cfg: cfg, cmds: map[int]*exec.Cmd{}}, nil
}

func (p *Provider) Name() string { return p.cfg.Name }
func (p *Provider) Kind() string { return "process" }

// Health checks that the binary can be executed.
func (p *Provider) Health(context.Context) error {
	st, err := os.Stat(p.cfg.Binary)
	if err != nil {
		return err
	}
	if st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p.cfg.Binary)
	}
	return nil
}

// Provision starts `hodei agent`; the token travels in the environment,
// not in argv.
func (p *Provider) Provision(ctx context.Context, workerID, token string, spec provider.Spec) ([]byte, error) {
	args := append([]string{"agent", "--server", p.cfg.Server}, p.cfg.Args...)
	if spec.Ephemeral {
		args = append(args, "--max-jobs", "1")
	}
	cmd := exec.Command(p.cfg.Binary, args...)
	cmd.Env = append(append(os.Environ(), p.cfg.Env...), "HODEI_BOOTSTRAP_TOKEN="+token, "HODEI_WORKER_ID="+workerID)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Stdout = p.cfg.Stderr
	cmd.Stderr = p.cfg.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	p.mu.Lock()
	p.cmds[cmd.Process.Pid] = cmd
	p.mu.Unlock()
	go func() {
		cmd.Wait() //nolint:errcheck // the exit is seen as a stream end
		p.mu.Lock()
		delete(p.cmds, cmd.Process.Pid)
		p.mu.Unlock()
	}()
	return json.Marshal(handle{PID: cmd.Process.Pid})
}

// List returns the agents this provider started. Agents of an earlier
// server process cannot outlive it (they get SIGTERM when it dies), so
// there are never orphans to find.
func (p *Provider) List(context.Context) ([]provider.Instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]provider.Instance, 0, len(p.cmds))
	for pid, cmd := range p.cmds {
		h, _ := json.Marshal(handle{PID: pid})
		out = append(out, provider.Instance{WorkerID: workerIDOf(cmd), Handle: h})
	}
	return out, nil
}

func workerIDOf(cmd *exec.Cmd) string {
	for _, e := range cmd.Env {
		if v, ok := strings.CutPrefix(e, "HODEI_WORKER_ID="); ok {
			return v
		}
	}
	return ""
}

// Inspect reports whether the agent process is still running.
func (p *Provider) Inspect(_ context.Context, h []byte) (bool, error) {
	var hd handle
	if err := json.Unmarshal(h, &hd); err != nil || hd.PID <= 0 {
		return false, fmt.Errorf("bad handle %q", h)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.cmds[hd.PID]
	return ok, nil
}

// Terminate sends SIGTERM to the agent (which drains), then SIGKILL to its
// group after the grace period.
func (p *Provider) Terminate(ctx context.Context, h []byte) error {
	var hd handle
	if err := json.Unmarshal(h, &hd); err != nil || hd.PID <= 0 {
		return fmt.Errorf("bad handle %q", h)
	}
	p.mu.Lock()
	cmd := p.cmds[hd.PID]
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(hd.PID, syscall.SIGTERM)
	grace := time.After(p.cfg.Grace)
	var killed <-chan time.Time // after SIGKILL: how long to wait for the exit
	for {
		p.mu.Lock()
		_, alive := p.cmds[hd.PID]
		p.mu.Unlock()
		if !alive {
			return nil
		}
		select {
		case <-grace:
			_ = syscall.Kill(-hd.PID, syscall.SIGKILL)
			grace, killed = nil, time.After(5*time.Second)
		case <-killed:
			return fmt.Errorf("agent %d did not exit after SIGKILL", hd.PID)
		case <-ctx.Done():
			_ = syscall.Kill(-hd.PID, syscall.SIGKILL)
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TerminateAll terminates every agent this provider started, in parallel.
func (p *Provider) TerminateAll(ctx context.Context) {
	insts, _ := p.List(ctx)
	var wg sync.WaitGroup
	for _, in := range insts {
		wg.Go(func() { _ = p.Terminate(ctx, in.Handle) })
	}
	wg.Wait()
}
