package pgembed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// requiredBins returns the server binaries FindBinDir looks for.
func requiredBins() []string { return []string{"initdb", "postgres", "pg_ctl"} }

// debianLibRoot is where Debian/Ubuntu packages install versioned server binaries.
const debianLibRoot = "/usr/lib/postgresql"

const installHint = `install PostgreSQL server binaries with "apt-get install postgresql" (or set Config.BinDir)`

// FindBinDir returns a directory holding the initdb, postgres and pg_ctl
// binaries. It searches PATH first, then /usr/lib/postgresql/*/bin, highest
// version first. When a PATH entry only holds symlinks to the binaries (for
// example /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb), the
// directory the symlinks point to is returned instead, so that client tools
// such as createdb are found next to the server binaries.
func FindBinDir() (string, error) {
	return findBinDir(os.Getenv("PATH"), debianLibRoot)
}

func findBinDir(pathList, libRoot string) (string, error) {
	requiredBins := requiredBins()
	found := make(map[string]bool, len(requiredBins))
	check := func(dir string) bool {
		missing := missingBins(dir, requiredBins)
		for _, b := range requiredBins {
			if !slices.Contains(missing, b) {
				found[b] = true
			}
		}
		return len(missing) == 0
	}

	for _, dir := range filepath.SplitList(pathList) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // never pick up binaries relative to the working directory
		}
		if !check(dir) {
			continue
		}
		if real, err := filepath.EvalSymlinks(filepath.Join(dir, "initdb")); err == nil {
			if realDir := filepath.Dir(real); realDir != filepath.Clean(dir) && len(missingBins(realDir, requiredBins)) == 0 {
				return realDir, nil
			}
		}
		return dir, nil
	}

	for _, dir := range versionedBinDirs(libRoot) {
		if check(dir) {
			return dir, nil
		}
	}

	var missing []string
	for _, b := range requiredBins {
		if !found[b] {
			missing = append(missing, b)
		}
	}
	where := fmt.Sprintf("in PATH or %s/*/bin", libRoot)
	if len(missing) == 0 {
		return "", fmt.Errorf("no single directory %s holds all of %s; %s",
			where, strings.Join(requiredBins, ", "), installHint)
	}
	return "", fmt.Errorf("postgres binaries not found %s (missing %s); %s",
		where, strings.Join(missing, ", "), installHint)
}

// versionedBinDirs lists libRoot/*/bin, highest version first.
func versionedBinDirs(libRoot string) []string {
	entries, err := os.ReadDir(libRoot)
	if err != nil {
		return nil
	}
	var versions []string
	for _, e := range entries {
		versions = append(versions, e.Name())
	}
	slices.SortFunc(versions, func(a, b string) int { return compareVersions(b, a) })
	dirs := make([]string, 0, len(versions))
	for _, v := range versions {
		dirs = append(dirs, filepath.Join(libRoot, v, "bin"))
	}
	return dirs
}

// compareVersions compares dotted numeric versions ("9.6" < "15");
// non-numeric components sort before numeric ones.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y string
		if i < len(as) {
			x = as[i]
		}
		if i < len(bs) {
			y = bs[i]
		}
		xn, xerr := strconv.Atoi(x)
		yn, yerr := strconv.Atoi(y)
		switch {
		case xerr == nil && yerr == nil:
			if c := xn - yn; c != 0 {
				return c
			}
		case xerr == nil:
			return 1
		case yerr == nil:
			return -1
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	return 0
}

// missingBins returns the names that are not executable regular files in dir.
func missingBins(dir string, names []string) []string {
	var missing []string
	for _, n := range names {
		if !isExecutable(filepath.Join(dir, n)) {
			missing = append(missing, n)
		}
	}
	return missing
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// checkBinDir verifies that an explicitly configured BinDir is usable.
func checkBinDir(dir string) error {
	if missing := missingBins(dir, []string{"initdb", "postgres"}); len(missing) > 0 {
		return fmt.Errorf("bin dir %s: missing %s; %s", dir, strings.Join(missing, ", "), installHint)
	}
	return nil
}

// clientBin returns the path of a client tool (createdb), preferring the one
// in binDir and falling back to PATH.
func clientBin(binDir, name string) (string, error) {
	if p := filepath.Join(binDir, name); isExecutable(p) {
		return p, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not in %s: %w", name, binDir, err)
	}
	return p, nil
}
