package agent

import "syscall"

// guardProcAttr starts the guardian in its own process group, with SIGTERM
// as its parent-death signal.
func guardProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// dupOnto makes fd newfd a copy of oldfd.
func dupOnto(oldfd, newfd int) error { return syscall.Dup3(oldfd, newfd, 0) }
