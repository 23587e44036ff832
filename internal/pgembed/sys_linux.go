package pgembed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// serverSysProcAttr puts postgres in its own process group, runs it as cred
// (when non-nil) and asks the kernel to send it SIGINT (fast shutdown) when
// the thread that started it dies, so it cannot outlive us even on kill -9.
func serverSysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT, Credential: cred}
}

// toolSysProcAttr is used for short-lived helpers such as initdb. SIGTERM
// (not SIGKILL) lets initdb remove a half-built data directory.
func toolSysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM, Credential: cred}
}

// childPIDs returns the direct children of pid. Postgres backends call
// setsid, so killing the postmaster's process group does not reach them.
func childPIDs(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Format: pid (comm) state ppid ...; comm may contain spaces and parens.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 2 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, n)
		}
	}
	return kids
}

// processGone reports whether pid has exited: it does not exist, or it
// is a zombie waiting for its parent (an orphan's new parent reaps it
// when it gets round to it).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// isPostmasterOf returns nil when pid is a postgres process whose working
// directory is dataDir (postgres moves into its data directory), else
// what it is instead.
func isPostmasterOf(pid int, dataDir string) error {
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	comm, err := os.ReadFile(filepath.Join(proc, "comm"))
	if err != nil {
		return err
	}
	if name := strings.TrimSpace(string(comm)); name != "postgres" {
		return fmt.Errorf("it is %q", name)
	}
	cwd, err := os.Readlink(filepath.Join(proc, "cwd"))
	if err != nil {
		return err
	}
	want, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		return err
	}
	if cwd != want {
		return fmt.Errorf("it is a postgres in %s", cwd)
	}
	return nil
}

// lockHolder names the process holding a flock on path, read from
// /proc/locks, as " (PID n)", or "" when it cannot tell.
func lockHolder(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return ""
	}
	// Lines: "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF".
	suffix := ":" + strconv.FormatUint(st.Ino, 10)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == "FLOCK" && strings.HasSuffix(f[5], suffix) {
			return " (PID " + f[4] + ")"
		}
	}
	return ""
}
