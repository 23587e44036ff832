//go:build !linux

package agent

import "syscall"

// guardProcAttr starts the guardian in its own process group; without a
// parent-death signal here, the end of the pipe alone stops it.
func guardProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// dupOnto makes fd newfd a copy of oldfd.
func dupOnto(oldfd, newfd int) error { return syscall.Dup2(oldfd, newfd) }
