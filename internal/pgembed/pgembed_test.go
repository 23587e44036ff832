package pgembed

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// requireBinaries skips the test when no PostgreSQL server binaries are
// installed, so `go test ./...` still passes on machines without them.
func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := FindBinDir(); err != nil {
		t.Skipf("postgres binaries not available: %v", err)
	}
}

func testConfig(t *testing.T) Config {
	return Config{
		Settings: map[string]string{"fsync": "off"},
		Logger:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

func startCluster(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	began := time.Now()
	c, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start took %v (port %d, data dir %s)", time.Since(began).Round(time.Millisecond), c.Port(), c.DataDir())
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return c
}

// searchableTempDir returns a temp dir the postgres OS user can traverse
// (t.TempDir is 0700, which blocks it when the tests run as root).
func searchableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgembed-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestTempCluster(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	ctx := t.Context()
	c := startCluster(t, testConfig(t))

	dataDir := c.DataDir()
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		t.Fatalf("data dir not initialised: %v", err)
	}
	if _, err := os.Stat(c.SocketDir()); err != nil {
		t.Fatalf("socket dir: %v", err)
	}
	if want := "postgres://hodei@127.0.0.1:" + itoa(c.Port()) + "/app?sslmode=disable"; c.URL("app") != want {
		t.Errorf("URL = %q, want %q", c.URL("app"), want)
	}

	if err := c.CreateDatabase(ctx, "app"); err != nil {
		t.Fatalf("CreateDatabase: %v", err)
	}
	err := c.CreateDatabase(ctx, "app")
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second CreateDatabase: got %v, want an 'already exists' error", err)
	}

	port := c.Port()
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if c.Port() != port {
		t.Errorf("port changed across Restart: %d -> %d", port, c.Port())
	}
	if err := c.CreateDatabase(ctx, "after_restart"); err != nil {
		t.Fatalf("CreateDatabase after Restart: %v", err)
	}
	if err := c.CreateDatabase(ctx, "app"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("database lost across Restart: %v", err)
	}

	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(dataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s not removed by Stop: %v", filepath.Dir(dataDir), err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := c.Restart(ctx); err == nil {
		t.Error("Restart after Stop succeeded")
	}
}

func TestReuseDataDir(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	ctx := t.Context()
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(searchableTempDir(t), "nested", "pg")

	c := startCluster(t, cfg)
	if err := c.CreateDatabase(ctx, "keep"); err != nil {
		t.Fatalf("CreateDatabase: %v", err)
	}
	sock := c.SocketDir()
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "PG_VERSION")); err != nil {
		t.Fatalf("caller's DataDir removed by Stop: %v", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir %s not removed by Stop: %v", sock, err)
	}

	// A broken setting: Start must fail and report postgres's own complaint.
	bad := cfg
	bad.Settings = map[string]string{"shared_buffers": "lots"}
	if c, err := Start(ctx, bad); err == nil {
		c.Stop(ctx)
		t.Fatal("Start with invalid shared_buffers succeeded")
	} else if !strings.Contains(err.Error(), "shared_buffers") {
		t.Errorf("Start error does not include the server log: %v", err)
	}

	c2 := startCluster(t, cfg)
	err := c2.CreateDatabase(ctx, "keep")
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("database did not survive Stop/Start on the same DataDir: %v", err)
	}
}

func TestStartMissingBinDir(t *testing.T) {
	t.Setenv("PATH", "")
	_, err := Start(t.Context(), Config{BinDir: filepath.Join(t.TempDir(), "nonexistent")})
	if err == nil {
		t.Fatal("Start with a nonexistent BinDir succeeded")
	}
	for _, want := range []string{"initdb", "postgres", "apt-get install postgresql"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestFindBinDirNotFound(t *testing.T) {
	_, err := findBinDir("", filepath.Join(t.TempDir(), "nonexistent"))
	if err == nil {
		t.Fatal("findBinDir with nothing to find succeeded")
	}
	for _, want := range []string{"initdb", "postgres", "pg_ctl", "apt-get install postgresql"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestFindBinDirSearchOrder(t *testing.T) {
	root := t.TempDir()
	fake := func(dir string, names ...string) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	lib := filepath.Join(root, "lib")
	fake(filepath.Join(lib, "9.6", "bin"), "initdb", "postgres", "pg_ctl")
	want := fake(filepath.Join(lib, "15", "bin"), "initdb", "postgres", "pg_ctl", "createdb")
	fake(filepath.Join(lib, "16", "bin"), "initdb") // incomplete
	if got, err := findBinDir("", lib); err != nil || got != want {
		t.Errorf("findBinDir(lib) = %q, %v; want %q", got, err, want)
	}

	// PATH wins, and a directory of symlinks resolves to their target.
	links := fake(filepath.Join(root, "links"))
	for _, n := range []string{"initdb", "postgres", "pg_ctl"} {
		if err := os.Symlink(filepath.Join(want, n), filepath.Join(links, n)); err != nil {
			t.Fatal(err)
		}
	}
	partial := fake(filepath.Join(root, "partial"), "initdb")
	path := strings.Join([]string{partial, links}, string(os.PathListSeparator))
	if got, err := findBinDir(path, filepath.Join(root, "none")); err != nil || got != want {
		t.Errorf("findBinDir(PATH) = %q, %v; want %q", got, err, want)
	}

	// Binaries present but never together: still a clear error.
	_, err := findBinDir(strings.Join([]string{partial, fake(filepath.Join(root, "pg"), "postgres", "pg_ctl")}, string(os.PathListSeparator)), "")
	if err == nil || !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Errorf("scattered binaries: got %v", err)
	}
}

func TestLogTail(t *testing.T) {
	lt := newLogTail(slog.New(slog.DiscardHandler))
	for i := range logTailLines + 10 {
		lt.Write([]byte("line " + itoa(i) + "\nx"))
		lt.Write([]byte("\n"))
	}
	lt.Write([]byte("partial"))
	got := strings.Split(lt.String(), "\n")
	if len(got) != logTailLines+1 {
		t.Fatalf("got %d lines, want %d", len(got), logTailLines+1)
	}
	if got[len(got)-1] != "partial" || got[len(got)-2] != "x" || got[len(got)-3] != "line 73" {
		t.Errorf("unexpected tail: %q", got[len(got)-3:])
	}
}

func TestPidFileReady(t *testing.T) {
	ready := "1234\n/data\n1700000000\n5432\n/tmp\n127.0.0.1\n  5432001         0\nready   \n"
	if !pidFileReady(ready, "1234") {
		t.Error("ready file not recognised")
	}
	if pidFileReady(ready, "999") {
		t.Error("stale pid file from another postmaster accepted")
	}
	if pidFileReady(strings.Replace(ready, "ready   ", "starting", 1), "1234") {
		t.Error("starting status accepted")
	}
	if pidFileReady("1234\n/data\n", "1234") {
		t.Error("truncated file accepted")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
