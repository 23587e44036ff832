package runner

import (
	"syscall"
	"unsafe"
)

// waitExitedNoReap blocks until the child pid has exited, leaving it a
// zombie so that its pid, and with it the process group ID, cannot be
// reused until it is reaped.
func waitExitedNoReap(pid int) error {
	const pPID = 1     // P_PID
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info)), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		if errno != syscall.EINTR {
			if errno != 0 {
				return errno
			}
			return nil
		}
	}
}
