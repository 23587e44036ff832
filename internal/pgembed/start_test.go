package pgembed

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartRefusesAnUnusableDataDir: a DataDir that is a file, or under
// one, fails Start at once, naming it, and leaves the file as it was.
func TestStartRefusesAnUnusableDataDir(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	file := filepath.Join(searchableTempDir(t), "file")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]string{
		file:                           "data dir " + file + " is not a directory",
		filepath.Join(file, "x", "pg"): "create data dir parent: mkdir " + file + ": not a directory",
	} {
		cfg := testConfig(t)
		cfg.DataDir = dir
		c, err := Start(t.Context(), cfg)
		if err == nil {
			c.Stop(context.Background())
			t.Fatalf("Start on %s succeeded", dir)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start on %s: %v, want %q", dir, err, want)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("%s after the refused starts: %q, %v; want it unchanged", file, b, err)
	}
}

// TestStartRefusesRootAsTheOSUser: postgres does not run as root, so
// neither does a cluster started by root with OSUser root.
func TestStartRefusesRootAsTheOSUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs postgres as another OS user")
	}
	requireBinaries(t)
	cfg := testConfig(t)
	cfg.OSUser = "root"
	_, err := Start(t.Context(), cfg)
	if err == nil || !strings.Contains(err.Error(), `os user "root" is root; postgres refuses to run as root`) {
		t.Fatalf("Start with OSUser root: %v, want a refusal", err)
	}
}

// TestStartOnATakenPortAndStopWithoutWaiting: a cluster asked for a port
// that is taken fails to start, saying why; its data dir, made private,
// then starts on a free port. CreateDatabase refuses an empty name. Stop
// with a context already done kills the server at once and says so.
func TestStartOnATakenPortAndStopWithoutWaiting(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	ctx := t.Context()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(searchableTempDir(t), "pg")
	if err := os.Mkdir(cfg.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Port = taken.Addr().(*net.TCPAddr).Port
	c, err := Start(ctx, cfg)
	if err == nil {
		c.Stop(context.Background())
		t.Fatal("Start on a taken port succeeded")
	}
	var se *startError
	if !errors.As(err, &se) || !se.portInUse || !strings.Contains(err.Error(), "exited during startup") {
		t.Fatalf("Start on a taken port: %v, want a start error about the port", err)
	}
	if fi, err := os.Stat(cfg.DataDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir after Start: %v, %v; want mode 0700", fi.Mode().Perm(), err)
	}

	cfg.Port = 0
	c, err = Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start on a free port: %v", err)
	}
	if err := c.CreateDatabase(ctx, ""); err == nil || err.Error() != "createdb: empty database name" {
		t.Errorf("CreateDatabase(\"\"): %v, want a refusal", err)
	}
	addr := net.JoinHostPort("127.0.0.1", itoa(c.Port()))
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Stop(done); err == nil || err.Error() != "stop postgres: killed: context canceled" {
		t.Errorf("Stop with a done context: %v, want it killed", err)
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Stop", addr)
	}
}

// TestCompareVersions: PostgreSQL installations sort by version, numbers
// compared as numbers, above anything not numeric.
func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int // sign
	}{
		{"16", "9.6", 1},
		{"9.6", "16", -1},
		{"16.2", "16.10", -1},
		{"16", "16", 0},
		{"16", "devel", 1},
		{"devel", "16", -1},
		{"beta", "devel", -1},
		{"16.beta", "16.beta", 0},
	} {
		got := compareVersions(tc.a, tc.b)
		if (got > 0) != (tc.want > 0) || (got < 0) != (tc.want < 0) {
			t.Errorf("compareVersions(%q, %q) = %d, want sign %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestFindBinDirSkipsRelativePATHEntries: binaries in a PATH entry
// relative to the working directory are never picked.
func TestFindBinDirSkipsRelativePATHEntries(t *testing.T) {
	root := t.TempDir()
	bin := filepath.Join(root, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range requiredBins() {
		if err := os.WriteFile(filepath.Join(bin, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(root)
	if got, err := findBinDir("bin", filepath.Join(root, "none")); err == nil {
		t.Errorf("findBinDir(PATH=bin) = %q, want nothing found", got)
	}
	if got, err := findBinDir(bin, filepath.Join(root, "none")); err != nil || got != bin {
		t.Errorf("findBinDir(PATH=%s) = %q, %v", bin, got, err)
	}
}

// TestClientBin: a client tool comes from the bin dir, else from PATH,
// else its absence is named.
func TestClientBin(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", "/bin:/usr/bin")
	if p, err := clientBin(dir, "sh"); err != nil || filepath.Base(p) != "sh" {
		t.Errorf("clientBin(sh) = %q, %v; want sh from PATH", p, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sh"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p, err := clientBin(dir, "sh"); err != nil || p != filepath.Join(dir, "sh") {
		t.Errorf("clientBin(sh) = %q, %v; want the bin dir's", p, err)
	}
	if _, err := clientBin(dir, "no-such-tool"); err == nil || !strings.Contains(err.Error(), "no-such-tool not in "+dir) {
		t.Errorf("clientBin(no-such-tool): %v, want it named", err)
	}
}
