//go:build unix && !linux

package runner

import (
	"errors"
	"os"
	"syscall"
)

// waitExitedNoReap is not implemented outside Linux; Run then kills the
// process group right after reaping the leader instead of right before.
func waitExitedNoReap(int) error {
	return errors.ErrUnsupported
}

// outputPipe returns a pipe for a process's output: the read end ours,
// non-blocking in the runtime's poller, the write end a plain blocking
// descriptor for the child.
func outputPipe() (r *os.File, w int, err error) {
	var p [2]int
	syscall.ForkLock.RLock()
	err = syscall.Pipe(p[:])
	if err == nil {
		syscall.CloseOnExec(p[0])
		syscall.CloseOnExec(p[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, -1, err
	}
	if err := syscall.SetNonblock(p[0], true); err != nil {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, -1, err
	}
	return os.NewFile(uintptr(p[0]), "|0"), p[1], nil
}
