//go:build unix && !linux

package pgembed

import (
	"errors"
	"syscall"
)

// serverSysProcAttr puts postgres in its own process group and runs it as
// cred (when non-nil). Parent-death signals are Linux-only, so on other
// systems postgres can outlive a killed parent.
func serverSysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// toolSysProcAttr is used for short-lived helpers such as initdb.
func toolSysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// childPIDs is not implemented outside Linux.
func childPIDs(int) []int { return nil }

// processGone reports whether pid has exited.
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// isPostmasterOf cannot tell outside Linux, so a live PID in
// postmaster.pid is never signalled there.
func isPostmasterOf(int, string) error {
	return errors.New("cannot inspect processes on this system")
}

// lockHolder is not implemented outside Linux.
func lockHolder(string) string { return "" }
