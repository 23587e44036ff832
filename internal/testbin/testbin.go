// Package testbin gives tests the hodei binary, which they run as agents,
// servers and jobs.
package testbin

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// Main sets *path to the hodei binary and runs m's tests with run (m.Run,
// or storetest.Main), returning its exit code. The binary is
// HODEI_TEST_BINARY when that is a static one, else one built static for
// this run and removed after it: Docker workers mount it.
func Main(m *testing.M, path *string, run func(*testing.M) int) int {
	// go test points GOCOVERDIR at a directory of its own; the hodei
	// processes the tests start write their coverage counters where
	// scripts/cover.sh wants them.
	if d := os.Getenv("HODEI_TEST_COVERDIR"); d != "" {
		os.Setenv("GOCOVERDIR", d)
	}
	if b := os.Getenv("HODEI_TEST_BINARY"); b != "" && isStatic(b) {
		*path = b
		return run(m)
	}
	dir, err := os.MkdirTemp("", "hodei-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "build hodei:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	*path = filepath.Join(dir, "hodei")
	build := exec.Command("go", "build", "-o", *path, "github.com/hodei-dev/hodei/cmd/hodei")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build hodei: %v\n%s", err, out)
		return 1
	}
	return run(m)
}

// isStatic reports whether path is an executable without an ELF
// interpreter (one that runs in a scratch image).
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return !slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
}
