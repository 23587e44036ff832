package runner

import (
	"os"
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

// outputPipe returns a pipe for a process's output: the read end ours,
// non-blocking in the runtime's poller, the write end a plain blocking
// descriptor for the child. os.Pipe put both ends in the poller, and
// starting the process took the write end out again: 4 more fcntl and 2
// more epoll_ctl per pipe, a cost that showed with short jobs.
func outputPipe() (r *os.File, w int, err error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return nil, -1, err
	}
	// The read end is only ever read: O_NONBLOCK is its only flag.
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(p[0]), syscall.F_SETFL, syscall.O_NONBLOCK); errno != 0 {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, -1, errno
	}
	return os.NewFile(uintptr(p[0]), "|0"), p[1], nil
}
