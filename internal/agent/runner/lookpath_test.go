//go:build unix

package runner

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// executable writes an executable script named name in dir and returns
// its path.
func executable(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLookPath(t *testing.T) {
	empty, plain, found := t.TempDir(), t.TempDir(), t.TempDir()
	// Neither a file without an execute bit nor a directory is a command.
	if err := os.WriteFile(filepath.Join(plain, "hodei-look"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(empty, "hodei-look"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := executable(t, found, "hodei-look")
	env := []string{"HOME=/", "PATH=" + empty + ":" + plain + ":" + found}

	path, remembered, err := lookPath("hodei-look", env)
	if err != nil || path != want || remembered {
		t.Fatalf("first lookup = %q, %v, %v; want %q, not remembered", path, remembered, err, want)
	}
	path, remembered, err = lookPath("hodei-look", env)
	if err != nil || path != want || !remembered {
		t.Fatalf("second lookup = %q, %v, %v; want %q, remembered", path, remembered, err, want)
	}
	// The same name in another PATH is another entry.
	other := append(env, "PATH="+found+":"+empty)
	if _, remembered, err := lookPath("hodei-look", other); err != nil || remembered {
		t.Errorf("lookup in another PATH: remembered %v, err %v; want a fresh lookup", remembered, err)
	}
	forgetPath("hodei-look", env)
	if path, remembered, err := lookPath("hodei-look", env); err != nil || path != want || remembered {
		t.Errorf("lookup after forgetPath = %q, %v, %v; want %q, not remembered", path, remembered, err, want)
	}

	if path, remembered, err := lookPath("./hodei-look", env); err != nil || path != "./hodei-look" || remembered {
		t.Errorf("a name with a slash = %q, %v, %v; want it as it is", path, remembered, err)
	}
	_, _, err = lookPath("hodei-look", []string{"PATH=" + empty + ":" + plain})
	var ee *exec.Error
	if !errors.Is(err, exec.ErrNotFound) || !errors.As(err, &ee) || ee.Name != "hodei-look" {
		t.Errorf("not found: err = %v, want an *exec.Error for hodei-look wrapping exec.ErrNotFound", err)
	}
}

// TestLookPathIgnoresRelativeEntries: a relative PATH entry would resolve
// against the job's working directory, so it is skipped.
func TestLookPathIgnoresRelativeEntries(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.Mkdir("rel", 0o755); err != nil {
		t.Fatal(err)
	}
	executable(t, "rel", "hodei-rel")
	abs := executable(t, t.TempDir(), "hodei-rel")
	env := []string{"PATH=rel:" + filepath.Dir(abs)}
	if path, _, err := lookPath("hodei-rel", env); err != nil || path != abs {
		t.Errorf("lookPath = %q, %v; want %q (the relative entry skipped)", path, err, abs)
	}
	if _, _, err := lookPath("hodei-rel", []string{"PATH=rel"}); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("only a relative entry: err = %v, want exec.ErrNotFound", err)
	}
}

// TestLookPathUsesTheCallersPATH: without PATH in env, the caller's PATH
// is searched; the last PATH entry of env wins, as the process sees it.
func TestLookPathUsesTheCallersPATH(t *testing.T) {
	mine, theirs := t.TempDir(), t.TempDir()
	want := executable(t, mine, "hodei-own")
	executable(t, theirs, "hodei-own")
	t.Setenv("PATH", mine)
	if path, _, err := lookPath("hodei-own", []string{"HOME=/"}); err != nil || path != want {
		t.Errorf("env without PATH: lookPath = %q, %v; want %q", path, err, want)
	}
	env := []string{"PATH=" + theirs, "PATH=" + mine}
	if path, _, err := lookPath("hodei-own", env); err != nil || path != want {
		t.Errorf("PATH twice in env: lookPath = %q, %v; want %q (the last entry)", path, err, want)
	}
}

// TestHashTableStartsOverWhenFull: the memory is bounded; a put into a
// full table forgets everything else.
func TestHashTableStartsOverWhenFull(t *testing.T) {
	h := hashTable{max: 2}
	h.put("a", "1")
	h.put("b", "2")
	if v, ok := h.get("a"); !ok || v != "1" {
		t.Fatalf("get(a) = %q, %v; want 1", v, ok)
	}
	h.put("c", "3")
	if _, ok := h.get("a"); ok {
		t.Errorf("a survived a put into a full table")
	}
	if v, ok := h.get("c"); !ok || v != "3" {
		t.Errorf("get(c) = %q, %v; want 3", v, ok)
	}
	h.del("c")
	if _, ok := h.get("c"); ok {
		t.Errorf("c survived del")
	}
}

// TestRunLooksUpAMovedCommandAgain: lookPath remembers where a name was
// found, and a remembered file that has gone is looked up again.
func TestRunLooksUpAMovedCommandAgain(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	write := func(dir, word string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "hodei-moved"), []byte("#!/bin/sh\necho "+word+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"PATH=" + first + ":" + second + ":/usr/bin:/bin"}
	run := func() string {
		t.Helper()
		out := newOutput()
		res := Run(t.Context(), Spec{Argv: []string{"hodei-moved"}, Env: env}, out.write)
		if res.Err != nil || res.ExitCode != 0 {
			t.Fatalf("run: %+v", res)
		}
		return strings.TrimSpace(out.get(StreamStdout))
	}
	write(first, "first")
	if got := run(); got != "first" {
		t.Fatalf("output = %q, want first", got)
	}
	if got := run(); got != "first" { // remembered
		t.Fatalf("output = %q, want first", got)
	}
	if err := os.Remove(filepath.Join(first, "hodei-moved")); err != nil {
		t.Fatal(err)
	}
	write(second, "second")
	if got := run(); got != "second" {
		t.Fatalf("after the move: output = %q, want second", got)
	}
	if err := os.Chmod(filepath.Join(second, "hodei-moved"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := Run(t.Context(), Spec{Argv: []string{"hodei-moved"}, Env: env}, nil)
	if !errors.Is(res.Err, exec.ErrNotFound) {
		t.Errorf("no longer executable: Err = %v, want exec.ErrNotFound", res.Err)
	}
}
