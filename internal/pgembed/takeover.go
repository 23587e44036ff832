package pgembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// takeoverGrace is how long a postmaster left running on the data
	// directory gets for a fast shutdown (SIGINT) before an immediate one
	// (SIGQUIT); takeoverTimeout bounds the whole wait.
	takeoverGrace   = 5 * time.Second
	takeoverTimeout = 30 * time.Second
	// sockDirPrefix names the socket directories of clusters with a
	// caller's DataDir; a leftover one is removed when the cluster is
	// taken over.
	sockDirPrefix = "pgembed-sock-"
)

// lockDataDir takes an exclusive advisory lock on the data directory,
// held until the cluster stops or its owning process dies (the kernel
// drops it then, even on SIGKILL). The descriptor is close-on-exec, so
// postgres never holds it: a held lock means a live owner, and any
// postmaster found on a directory whose lock was free is an orphan.
func (c *Cluster) lockDataDir() error {
	f, err := os.Open(c.dataDir)
	if err != nil {
		return fmt.Errorf("lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("data dir %s is in use by another process%s", c.dataDir, lockHolder(c.dataDir))
		}
		// A file system without flock: no lock, and so no takeover.
		c.log.Warn("cannot lock the data dir; a postgres left running there will not be stopped",
			slog.String("data_dir", c.dataDir), slog.Any("err", err))
		return nil
	}
	c.lock = f
	return nil
}

// unlockDataDir releases the lock taken by lockDataDir.
func (c *Cluster) unlockDataDir() {
	if c.lock != nil {
		c.lock.Close()
		c.lock = nil
	}
}

// takeOver stops a postmaster that a dead owner left on the data
// directory, so that a new one can start at once: after a SIGKILL of its
// owner, a postmaster is still shutting down (parent-death signal) or,
// without one, still running, and postgres refuses to start while the
// PID in postmaster.pid is alive. Only a postgres process whose working
// directory is this data directory is signalled; a PID file naming any
// other process (a reused PID) is left to postgres, which starts when that
// process runs as another OS user and refuses otherwise. A dead PID needs
// nothing: postgres replaces a stale file itself. Without the lock on the
// data dir (a file system without flock), takeOver does nothing.
func (c *Cluster) takeOver(ctx context.Context) error {
	if c.lock == nil {
		return nil
	}
	pidFile := filepath.Join(c.dataDir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read %s: %w", pidFile, err)
	}
	lines := strings.Split(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 { // empty, torn, or a single-user backend: postgres judges
		return nil
	}
	if processGone(pid) {
		removeStaleSocketDir(lines)
		return nil
	}
	if err := isPostmasterOf(pid, c.dataDir); err != nil {
		// A reused PID: postgres itself decides whether the file is stale.
		c.log.Warn("postmaster.pid names a running process that is not a postgres of the data dir; leaving it alone",
			slog.Int("pid", pid), slog.String("data_dir", c.dataDir), slog.String("reason", err.Error()))
		return nil
	}
	c.log.Warn("stopping the postgres a previous owner left running on the data dir",
		slog.Int("pid", pid), slog.String("data_dir", c.dataDir))
	began := time.Now()
	if err := stopOrphan(ctx, pid); err != nil {
		return fmt.Errorf("data dir %s: stop postgres PID %d left running by a previous owner: %w", c.dataDir, pid, err)
	}
	c.log.Info("previous postgres stopped", slog.Int("pid", pid), slog.Duration("elapsed", time.Since(began)))
	removeStaleSocketDir(lines)
	return nil
}

// stopOrphan asks postmaster pid for a fast shutdown, then for an
// immediate one after takeoverGrace, and waits until it is gone, for at
// most takeoverTimeout. It never sends SIGKILL: a killed postmaster
// leaves backends attached to the data directory.
func stopOrphan(ctx context.Context, pid int) error {
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal: %w", err)
	}
	quit := time.After(takeoverGrace)
	timeout := time.After(takeoverTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !processGone(pid) {
		select {
		case <-quit:
			if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("signal: %w", err)
			}
		case <-timeout:
			return fmt.Errorf("still running %v after SIGINT and SIGQUIT", takeoverTimeout)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// removeStaleSocketDir removes the private socket directory named in a
// previous postmaster's PID file (its 5th line), which its killed owner
// could not remove. Only a directory of ours in the temp dir qualifies.
func removeStaleSocketDir(pidLines []string) {
	if len(pidLines) < 5 {
		return
	}
	dir := filepath.Clean(strings.TrimSpace(pidLines[4]))
	if filepath.Dir(dir) != filepath.Clean(os.TempDir()) || !strings.HasPrefix(filepath.Base(dir), sockDirPrefix) {
		return
	}
	_ = os.RemoveAll(dir)
}
