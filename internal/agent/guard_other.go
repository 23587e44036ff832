//go:build !linux

package agent

import "syscall"

// guardProcAttr starts the guardian in its own process group; without a
// parent-death signal here, the end of the pipe alone stops it.
func guardProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
