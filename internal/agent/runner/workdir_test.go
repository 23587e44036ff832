//go:build unix

package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunNamesAnUnusableWorkdir: a process that cannot start in its
// working directory fails with the directory named, not the program.
func TestRunNamesAnUnusableWorkdir(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(tmp, "missing")
	env := []string{"PATH=" + os.Getenv("PATH")}
	for _, tc := range []struct {
		dir, want string
	}{
		{missing, "start process: workdir " + missing + ": no such file or directory"},
		{file, "start process: workdir " + file + ": not a directory"},
	} {
		res := Run(t.Context(), Spec{Argv: []string{"true"}, Env: env, Dir: tc.dir}, nil)
		if res.Err == nil || res.Err.Error() != tc.want || res.ExitCode != -1 {
			t.Errorf("Run in %s: exit %d, error %v; want exit -1, error %q", tc.dir, res.ExitCode, res.Err, tc.want)
		}
	}
	// A program that is missing in a directory that exists is still named.
	res := Run(t.Context(), Spec{Argv: []string{"./missing-program"}, Env: env, Dir: tmp}, nil)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "missing-program") || strings.Contains(res.Err.Error(), "workdir") {
		t.Errorf("Run of a missing program: %v, want an error naming the program", res.Err)
	}
}
