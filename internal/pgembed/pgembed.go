// Package pgembed starts a private PostgreSQL cluster from locally installed
// server binaries, for dev mode, tests and benchmarks.
//
// The cluster is initialised with initdb (trust authentication, superuser
// "hodei", UTF8, C locale) unless the data directory already holds one, and
// postgres is run directly as a child process rather than through pg_ctl. It
// gets its own process group and, on Linux, a parent-death signal (SIGINT,
// i.e. fast shutdown), so it does not outlive the process that started it,
// even when that process is killed with SIGKILL. It listens on 127.0.0.1 and
// on a Unix socket in a private directory.
//
// The owning process holds an advisory lock on the data directory while
// the cluster runs; a second Start on the same directory fails instead of
// disturbing it. A Start on a directory whose previous owner died (kill -9)
// takes it over at once: a postmaster still shutting down there, or still
// running, is asked to stop and awaited before the new one starts.
//
// When the current process runs as root, initdb and postgres run as an
// unprivileged OS user (Config.OSUser, default "postgres"), which is created
// if missing, because PostgreSQL refuses to run as root.
package pgembed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// superuser is the database superuser created by initdb.
	superuser = "hodei"

	startTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
	pollInterval = 10 * time.Millisecond
	// portAttempts bounds retries when an automatically picked port is
	// taken by someone else between picking it and postgres binding it.
	portAttempts = 5
)

// Config configures Start. The zero value is usable.
type Config struct {
	// DataDir is where the cluster lives. Empty means a fresh temporary
	// directory that Stop removes. An existing directory holding a cluster
	// (a PG_VERSION file) is reused without running initdb; otherwise the
	// directory must be empty or absent and is initialised.
	DataDir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// OSUser is the unprivileged OS user initdb and postgres run as when the
	// current process is root; default "postgres". It is created with
	// useradd --system --no-create-home (or adduser) if missing. Ignored
	// when not running as root: the current user is used.
	OSUser string
	// Settings are extra server settings, passed as -c key=value. They
	// override the defaults max_connections=200, shared_buffers=128MB and
	// listen_addresses=127.0.0.1. fsync is left on unless set here.
	Settings map[string]string
	// Logger receives progress at info level and the server log at debug
	// level. Nil discards.
	Logger *slog.Logger
	// BinDir is the directory holding initdb and postgres; default
	// FindBinDir().
	BinDir string
}

// Cluster is a running private PostgreSQL cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	binDir    string
	dataDir   string
	socketDir string
	port      int
	user      *osUser  // nil unless running as root
	args      []string // -c settings
	log       *slog.Logger

	mu       sync.Mutex
	proc     *serverProc // nil while not running
	stopped  bool
	tempDirs []string // removed by Stop
	lock     *os.File // flock on dataDir, held until Stop
}

// serverProc is one run of the postmaster.
type serverProc struct {
	cmd      *exec.Cmd
	tail     *logTail
	done     chan struct{} // closed once the postmaster has exited and been reaped
	err      error         // exit status; read only after done is closed
	ready    atomic.Bool
	stopping atomic.Bool
}

// Start initialises (if needed) and starts a cluster, returning once it
// accepts connections. The wait is bounded by ctx and by 30 seconds.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	began := time.Now()
	log := discardLogger(cfg.Logger)

	binDir := cfg.BinDir
	if binDir == "" {
		if binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	} else if err := checkBinDir(binDir); err != nil {
		return nil, err
	}

	c := &Cluster{binDir: binDir, port: cfg.Port, args: settingArgs(cfg.Settings), log: log}
	if os.Geteuid() == 0 {
		if c.user, err = lookupOrCreateUser(ctx, cmp.Or(cfg.OSUser, defaultOSUser), log); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			c.unlockDataDir()
			_ = c.removeTempDirs()
		}
	}()
	if err := c.prepareDirs(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := c.lockDataDir(); err != nil {
		return nil, err
	}

	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); err == nil {
		log.Info("reusing postgres data dir", slog.String("data_dir", c.dataDir))
		if err := c.takeOver(ctx); err != nil {
			return nil, err
		}
	} else if errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	} else {
		return nil, fmt.Errorf("check data dir: %w", err)
	}

	for attempt := 1; ; attempt++ {
		if cfg.Port == 0 {
			if c.port, err = freePort(); err != nil {
				return nil, err
			}
		}
		err = c.startServer(ctx)
		var se *startError
		if err == nil || cfg.Port != 0 || attempt == portAttempts || !errors.As(err, &se) || !se.portInUse {
			break
		}
		log.Debug("postgres port taken, retrying", slog.Int("port", c.port))
	}
	if err != nil {
		return nil, err
	}
	log.Info("postgres ready",
		slog.Int("port", c.port),
		slog.String("data_dir", c.dataDir),
		slog.Duration("elapsed", time.Since(began)))
	return c, nil
}

// URL returns a connection URL for dbname over TCP.
func (c *Cluster) URL(dbname string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, c.port, url.PathEscape(dbname))
}

// SocketDir returns the directory holding the server's Unix socket.
func (c *Cluster) SocketDir() string { return c.socketDir }

// Port returns the server's TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// DataDir returns the cluster's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// CreateDatabase creates database name, owned by the superuser, by running
// the createdb client over the Unix socket.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("createdb: empty database name")
	}
	bin, err := clientBin(c.binDir, "createdb")
	if err != nil {
		return fmt.Errorf("createdb: %w", err)
	}
	out, err := runTool(ctx, nil, bin,
		"-h", c.socketDir, "-p", strconv.Itoa(c.port), "-U", superuser, "--no-password", "--", name)
	if err != nil {
		return fmt.Errorf("createdb %s: %w: %s", name, err, out)
	}
	return nil
}

// Restart shuts the server down (fast shutdown) and starts it again on the
// same port and data directory, returning once it accepts connections.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("restart: cluster stopped")
	}
	if p := c.proc; p != nil {
		c.proc = nil
		if err := c.shutdown(ctx, p); err != nil {
			// postgres is gone either way; starting again runs recovery.
			c.log.Warn("postgres shutdown during restart", slog.Any("err", err))
		}
	}
	if err := c.startServer(ctx); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return nil
}

// Stop shuts the server down with a fast shutdown (SIGINT), waiting up to
// 30 seconds or until ctx is done before killing it, then removes the
// temporary directories Start created. A DataDir given in Config is kept.
// Stop is idempotent.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	var errs []error
	if p := c.proc; p != nil {
		c.proc = nil
		errs = append(errs, c.shutdown(ctx, p))
	}
	c.unlockDataDir()
	errs = append(errs, c.removeTempDirs())
	return errors.Join(errs...)
}

// prepareDirs creates the data and socket directories with the ownership
// and permissions postgres insists on.
func (c *Cluster) prepareDirs(dataDir string) error {
	if dataDir == "" {
		root, err := c.makeTempDir("pgembed-")
		if err != nil {
			return err
		}
		c.dataDir = filepath.Join(root, "data")
		c.socketDir = filepath.Join(root, "sock")
		if err := os.Mkdir(c.socketDir, 0o755); err != nil {
			return fmt.Errorf("create socket dir: %w", err)
		}
	} else {
		abs, err := filepath.Abs(dataDir)
		if err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		c.dataDir = abs
		// A separate short directory: socket paths are limited to ~107 bytes.
		if c.socketDir, err = c.makeTempDir(sockDirPrefix); err != nil {
			return err
		}
	}
	if c.user != nil {
		if err := os.Chown(c.socketDir, int(c.user.uid), int(c.user.gid)); err != nil {
			return fmt.Errorf("chown socket dir: %w", err)
		}
		if err := checkTraversable(c.socketDir, c.user); err != nil {
			return fmt.Errorf("socket dir: %w", err)
		}
	}
	return c.makeDataDir()
}

// makeTempDir creates a temporary directory that Stop removes, readable and
// searchable by the postgres OS user.
func (c *Cluster) makeTempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", fmt.Errorf("create temp dir: %w", err)
	}
	c.tempDirs = append(c.tempDirs, dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("chmod temp dir: %w", err)
	}
	return dir, nil
}

// makeDataDir ensures the data directory exists with mode 0700 (or 0750)
// and, when running as root, belongs to the postgres OS user.
func (c *Cluster) makeDataDir() error {
	if err := os.MkdirAll(filepath.Dir(c.dataDir), 0o755); err != nil {
		return fmt.Errorf("create data dir parent: %w", err)
	}
	if err := os.Mkdir(c.dataDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create data dir: %w", err)
	}
	fi, err := os.Stat(c.dataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data dir %s is not a directory", c.dataDir)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 && perm != 0o750 {
		if err := os.Chmod(c.dataDir, 0o700); err != nil {
			return fmt.Errorf("chmod data dir: %w", err)
		}
	}
	if c.user != nil {
		if err := checkTraversable(c.dataDir, c.user); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		if err := chownTree(c.dataDir, c.user); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	return nil
}

func (c *Cluster) removeTempDirs() error {
	var errs []error
	for _, d := range c.tempDirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove temp dir: %w", err))
		}
	}
	c.tempDirs = nil
	return errors.Join(errs...)
}

func (c *Cluster) credential() *syscall.Credential {
	if c.user == nil {
		return nil
	}
	return c.user.credential()
}

// initdb initialises the data directory, falling back from the C.UTF-8
// locale to C where the former is not available.
func (c *Cluster) initdb(ctx context.Context) error {
	began := time.Now()
	locales := []string{"C.UTF-8", "C"}
	var (
		out string
		err error
	)
	for i, loc := range locales {
		// initdb empties the directory when it fails; make sure it exists.
		if err := c.makeDataDir(); err != nil {
			return err
		}
		out, err = runTool(ctx, c.credential(), filepath.Join(c.binDir, "initdb"),
			"-D", c.dataDir, "-U", superuser, "--auth=trust", "-E", "UTF8", "--locale="+loc, "--no-sync")
		if err == nil {
			c.log.Info("initdb done",
				slog.String("data_dir", c.dataDir),
				slog.String("locale", loc),
				slog.Duration("elapsed", time.Since(began)))
			return nil
		}
		if i == len(locales)-1 || ctx.Err() != nil || !strings.Contains(out, "locale") {
			break
		}
		c.log.Debug("initdb locale unavailable, falling back",
			slog.String("locale", loc), slog.String("output", out))
	}
	return fmt.Errorf("initdb: %w: %s", err, out)
}

// startError is returned when postgres exits before becoming ready.
type startError struct {
	err       error
	tail      string
	portInUse bool
}

func (e *startError) Error() string {
	return fmt.Sprintf("start postgres: exited during startup: %v; last log lines:\n%s", e.err, e.tail)
}

func (e *startError) Unwrap() error { return e.err }

// startServer runs the postmaster and waits until it is ready. c.mu must be
// held or c must not yet be shared.
func (c *Cluster) startServer(ctx context.Context) error {
	p, err := c.spawn()
	if err != nil {
		return err
	}
	if err := c.waitReady(ctx, p); err != nil {
		p.stopping.Store(true)
		kill(p)
		return err
	}
	c.proc = p
	return nil
}

// spawn starts the postmaster from a goroutine locked to its OS thread for
// the postmaster's whole life: the kernel sends the parent-death signal when
// the forking thread exits, not when the process does, and the Go runtime
// may otherwise retire that thread while postgres is still running.
func (c *Cluster) spawn() (*serverProc, error) {
	args := append([]string{"-D", c.dataDir, "-p", strconv.Itoa(c.port), "-k", c.socketDir}, c.args...)
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"), args...)
	cmd.Dir = "/"
	cmd.Env = childEnv()
	cmd.SysProcAttr = serverSysProcAttr(c.credential())
	cmd.WaitDelay = 2 * time.Second // in case orphaned backends keep the log pipe open
	p := &serverProc{cmd: cmd, tail: newLogTail(c.log), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.tail, p.tail

	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		if p.ready.Load() && !p.stopping.Load() {
			c.log.Warn("postgres exited unexpectedly", slog.Any("err", p.err), slog.String("log", p.tail.String()))
		}
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c.log.Debug("postgres started", slog.Int("pid", cmd.Process.Pid), slog.Int("port", c.port))
	return p, nil
}

// waitReady polls postmaster.pid until its status line says "ready" for our
// postmaster. An open port is not enough: during crash recovery postgres
// listens but refuses connections.
func (c *Cluster) waitReady(ctx context.Context, p *serverProc) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	pidFile := filepath.Join(c.dataDir, "postmaster.pid")
	pid := strconv.Itoa(p.cmd.Process.Pid)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(pidFile); err == nil && pidFileReady(string(b), pid) {
			p.ready.Store(true)
			return nil
		}
		select {
		case <-p.done:
			tail := p.tail.String()
			return &startError{
				err:  cmp.Or(p.err, errors.New("exit status 0")),
				tail: tail,
				portInUse: strings.Contains(tail, "could not bind IPv4 address") ||
					strings.Contains(tail, "could not create any TCP/IP sockets"),
			}
		case <-ctx.Done():
			return fmt.Errorf("wait for postgres: %w; last log lines:\n%s", ctx.Err(), p.tail.String())
		case <-tick.C:
		}
	}
}

// pidFileReady reports whether postmaster.pid belongs to pid and its status
// line (the 8th) is "ready".
func pidFileReady(content, pid string) bool {
	lines := strings.Split(content, "\n")
	return len(lines) >= 8 &&
		strings.TrimSpace(lines[0]) == pid &&
		strings.TrimSpace(lines[7]) == "ready"
}

// shutdown requests a fast shutdown and waits for the postmaster to exit,
// killing it after stopTimeout or when ctx is done.
func (c *Cluster) shutdown(ctx context.Context, p *serverProc) error {
	p.stopping.Store(true)
	select {
	case <-p.done:
		return fmt.Errorf("postgres exited unexpectedly: %w; last log lines:\n%s",
			cmp.Or(p.err, errors.New("exit status 0")), p.tail.String())
	default:
	}
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.log.Warn("signal postgres", slog.Any("err", err))
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	var why error
	select {
	case <-p.done:
		if p.err != nil && !errors.Is(p.err, exec.ErrWaitDelay) {
			c.log.Warn("postgres shutdown", slog.Any("err", p.err), slog.String("log", p.tail.String()))
		}
		return nil
	case <-timer.C:
		why = fmt.Errorf("no exit after %v", stopTimeout)
	case <-ctx.Done():
		why = ctx.Err()
	}
	kill(p)
	return fmt.Errorf("stop postgres: killed: %w", why)
}

// kill sends SIGKILL to the postmaster's process group and to its children
// (backends run in their own sessions), then waits for the postmaster to be
// reaped.
func kill(p *serverProc) {
	select {
	case <-p.done:
		return
	default:
	}
	pid := p.cmd.Process.Pid
	kids := childPIDs(pid)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	<-p.done
}

// runTool runs a helper binary to completion and returns its combined
// output. ctx cancellation sends SIGTERM so initdb can clean up.
func runTool(ctx context.Context, cred *syscall.Credential, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = "/"
	cmd.Env = childEnv()
	cmd.SysProcAttr = toolSysProcAttr(cred)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// childEnv is the environment minus PG* variables (PGDATA, PGPORT,
// PGOPTIONS, ...), which would silently change what the children do.
func childEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG")
	})
}

// settingArgs merges settings over the defaults and renders them as -c flags
// in a stable order.
func settingArgs(settings map[string]string) []string {
	merged := map[string]string{
		"listen_addresses": "127.0.0.1",
		"max_connections":  "200",
		"shared_buffers":   "128MB",
	}
	maps.Copy(merged, settings)
	var args []string
	for _, k := range slices.Sorted(maps.Keys(merged)) {
		args = append(args, "-c", k+"="+merged[k])
	}
	return args
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ThrowawaySettings turn durability off: for clusters whose data is thrown
// away (tests), never for dev or benchmarks.
func ThrowawaySettings() map[string]string {
	return map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "500"}
}
