package runner

import (
	"os"
	"syscall"
)

// workdirError explains a failed start by the working directory dir when
// dir is set and cannot be one: the error of the start itself names only
// the program ("fork/exec /usr/bin/true: no such file or directory"),
// whatever the child's chdir or exec failed on. It returns nil when dir
// is empty or a directory.
func workdirError(dir string) error {
	if dir == "" {
		return nil
	}
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		return &os.PathError{Op: "workdir", Path: dir, Err: underlying(err)}
	case !fi.IsDir():
		return &os.PathError{Op: "workdir", Path: dir, Err: syscall.ENOTDIR}
	}
	return nil
}

// underlying is the error a *os.PathError wraps, or err itself.
func underlying(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
