package pgembed

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ownerEnv makes the test binary an owner process: TestOwnerProcess
// starts a cluster on the data dir it names, prints "ready PID", and
// blocks until killed.
const ownerEnv = "PGEMBED_TEST_OWNER_DATA_DIR"

func TestOwnerProcess(t *testing.T) {
	dir := os.Getenv(ownerEnv)
	if dir == "" {
		t.Skip("runs only as the owner process of another test")
	}
	c, err := Start(context.Background(), Config{DataDir: dir, Settings: map[string]string{"fsync": "off"}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if err := c.CreateDatabase(context.Background(), "keep"); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("ready", c.proc.cmd.Process.Pid)
	select {}
}

// startOwner runs a process that owns a cluster on dir and returns it
// with its postmaster's PID.
func startOwner(t *testing.T, dir string) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOwnerProcess$")
	cmd.Env = append(os.Environ(), ownerEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	if err != nil || perr != nil {
		t.Fatalf("owner process: %q, %v", line, err)
	}
	return cmd, pid
}

// TestStartTakesOverFromAKilledOwner: the process owning a cluster is
// killed with SIGKILL and a new Start on the same data dir follows at
// once, while the old postmaster is still shutting down. It comes up with
// the data, the old postmaster is gone, and so is its socket dir.
func TestStartTakesOverFromAKilledOwner(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(searchableTempDir(t), "pg")
	owner, old := startOwner(t, cfg.DataDir)
	oldSock := socketDirOf(t, cfg.DataDir)

	if err := owner.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	owner.Wait()
	c := startCluster(t, cfg)
	if !processGone(old) {
		t.Errorf("old postmaster %d still running after the new one started", old)
	}
	if err := c.CreateDatabase(t.Context(), "keep"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("database of the killed owner lost: %v", err)
	}
	if _, err := os.Stat(oldSock); !os.IsNotExist(err) {
		t.Errorf("socket dir %s of the killed owner left behind: %v", oldSock, err)
	}
}

// TestStartWaitsForAnOrphanStillShuttingDown: the postmaster of a killed
// owner cannot finish its shutdown for a second (its checkpointer is
// paused, as one busy with a long shutdown checkpoint); a new Start waits
// for it instead of failing, and then comes up with the data.
func TestStartWaitsForAnOrphanStillShuttingDown(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(searchableTempDir(t), "pg")
	owner, old := startOwner(t, cfg.DataDir)
	checkpointer := childNamed(t, old, "checkpointer")

	if err := syscall.Kill(checkpointer, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resume := func() { syscall.Kill(checkpointer, syscall.SIGCONT) }
	defer resume()
	if err := owner.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	owner.Wait()
	time.AfterFunc(time.Second, resume)
	began := time.Now()
	c := startCluster(t, cfg)
	if waited := time.Since(began); waited < time.Second {
		t.Errorf("started %v after the kill, before the old postmaster could exit", waited)
	}
	if !processGone(old) {
		t.Errorf("old postmaster %d still running after the new one started", old)
	}
	if err := c.CreateDatabase(t.Context(), "keep"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("database of the killed owner lost: %v", err)
	}
}

// childNamed returns the child of pid whose command line contains name
// (postgres children retitle themselves "postgres: checkpointer", ...).
func childNamed(t *testing.T, pid int, name string) int {
	t.Helper()
	for _, k := range childPIDs(pid) {
		b, _ := os.ReadFile(filepath.Join("/proc", itoa(k), "cmdline"))
		if strings.Contains(string(b), name) {
			return k
		}
	}
	t.Fatalf("postmaster %d has no %s child", pid, name)
	return 0
}

// TestStartRefusesADataDirInUse: a second Start on a data dir whose owner
// is alive fails, naming the directory, and leaves the running cluster
// alone.
func TestStartRefusesADataDirInUse(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(searchableTempDir(t), "pg")
	c := startCluster(t, cfg)
	pid := c.proc.cmd.Process.Pid

	c2, err := Start(t.Context(), cfg)
	if err == nil {
		c2.Stop(context.Background())
		t.Fatal("second Start on a data dir in use succeeded")
	}
	if want := "data dir " + cfg.DataDir + " is in use by another process (PID " + itoa(os.Getpid()) + ")"; err.Error() != want {
		t.Errorf("second Start: %v, want %q", err, want)
	}
	if processGone(pid) {
		t.Fatal("the running postmaster was stopped")
	}
	if err := c.CreateDatabase(t.Context(), "still_serving"); err != nil {
		t.Errorf("first cluster after the refused Start: %v", err)
	}
}

// TestStartNeverSignalsAnotherProcess: a postmaster.pid naming a live
// process that is not a postgres of the data dir (a reused PID) never gets
// that process signalled: postgres decides, and starts when the process
// runs as another OS user (tests as root: postgres runs as "postgres"),
// else refuses, naming the PID. A PID file naming a dead process does not
// keep the cluster from starting.
func TestStartNeverSignalsAnotherProcess(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(searchableTempDir(t), "pg")
	c := startCluster(t, cfg)
	if err := c.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	pidFile := filepath.Join(cfg.DataDir, "postmaster.pid")
	writePidFile := func(pid int) {
		t.Helper()
		content := fmt.Sprintf("%d\n%s\n1700000000\n5432\n/tmp\n127.0.0.1\n  5432001         0\nready   \n", pid, cfg.DataDir)
		if err := os.WriteFile(pidFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		// The file belongs to the OS user postgres runs as.
		fi, err := os.Stat(cfg.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if err := os.Chown(pidFile, int(st.Uid), int(st.Gid)); err != nil {
			t.Fatal(err)
		}
	}

	writePidFile(sleeper.Process.Pid)
	c, err := Start(t.Context(), cfg)
	if err == nil {
		c.Stop(context.Background())
	}
	if os.Geteuid() == 0 && err != nil {
		t.Errorf("Start with postmaster.pid naming a live process of another user: %v", err)
	} else if os.Geteuid() != 0 && (err == nil || !strings.Contains(err.Error(), itoa(sleeper.Process.Pid))) {
		t.Errorf("Start with postmaster.pid naming a live process of ours: %v, want a refusal naming its PID", err)
	}
	if processGone(sleeper.Process.Pid) {
		t.Fatal("Start signalled a process that is not a postgres")
	}

	sleeper.Process.Kill()
	sleeper.Wait()
	writePidFile(sleeper.Process.Pid)
	startCluster(t, cfg)
}

// socketDirOf reads the socket directory from a running cluster's PID file.
func socketDirOf(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 5 {
		t.Fatalf("short postmaster.pid: %q", b)
	}
	return strings.TrimSpace(lines[4])
}
