//go:build unix

package runner

import (
	"fmt"
	"syscall"
)

// shimmed returns the argv that starts spec's process through its shim
// (the shim, the path of Argv[0], Argv), the read end of the pipe that is
// the shim's stdin, and feed, which writes ShimInput into the pipe and
// closes its write end, on a goroutine of its own when the input may not
// fit in the pipe's buffer.
func shimmed(spec Spec) (argv []string, r int, feed func(), err error) {
	path, _, err := lookPath(spec.Argv[0], spec.Env)
	if err != nil {
		return nil, -1, nil, fmt.Errorf("start process: %w", err)
	}
	argv = make([]string, 0, len(spec.Shim)+1+len(spec.Argv))
	argv = append(append(append(argv, spec.Shim...), path), spec.Argv...)
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return nil, -1, nil, fmt.Errorf("create shim pipe: %w", err)
	}
	input := spec.ShimInput
	write := func() {
		for b := input; len(b) > 0; {
			n, err := syscall.Write(p[1], b)
			if err == syscall.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				break // the shim is gone: it reports nothing more
			}
			b = b[n:]
		}
		syscall.Close(p[1])
	}
	// Linux pipes hold 64 KiB: a smaller input is written at once.
	if len(input) <= 64<<10 {
		return argv, p[0], write, nil
	}
	return argv, p[0], func() { go write() }, nil
}
