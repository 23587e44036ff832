package agent

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startGroup starts `sh -c 'sleep 60 & wait'` as the leader of its own
// process group: a shell and a grandchild. It returns the group's id and a
// channel closed once the leader has been reaped.
func startGroup(t *testing.T) (int, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 60 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL); <-done })
	return pgid, done
}

// TestGuardianKillsListedGroupsAtEOF: at the end of its input the guardian
// kills every group still listed (all their processes), and none it was
// told has ended.
func TestGuardianKillsListedGroupsAtEOF(t *testing.T) {
	listed, listedDone := startGroup(t)
	removed, removedDone := startGroup(t)
	r, w := io.Pipe()
	served := make(chan error, 1)
	go func() { served <- (&guardian{groups: map[int]struct{}{}}).serve(r) }()
	for _, line := range []string{"+" + strconv.Itoa(listed), "+" + strconv.Itoa(removed), "-" + strconv.Itoa(removed), "junk", "+1"} {
		if _, err := io.WriteString(w, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case <-listedDone:
		t.Fatal("a listed group was killed before the end of the input")
	default:
	}
	w.Close()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	select {
	case <-listedDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the listed group's leader still runs after the end of the input")
	}
	// The grandchild is gone too (a zombie at most; SIGKILL takes effect
	// when it is next scheduled).
	for deadline := time.Now().Add(5 * time.Second); len(liveMembers(listed)) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("processes %v of group %d alive 5s after the end of the input", liveMembers(listed), listed)
		}
	}
	select {
	case <-removedDone:
		t.Error("the guardian killed a group it had been told has ended")
	case <-time.After(200 * time.Millisecond):
	}
}

// liveMembers lists the processes of group pgid that are not zombies.
func liveMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) >= 3 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}

// TestGuardianKillsAtTheDeadlineOfAFrozenAgent: with its input still open
// (the agent lives but is frozen), the guardian kills the listed groups
// once the last deadline passes, and not before; a renewed deadline puts
// the kill off.
func TestGuardianKillsAtTheDeadlineOfAFrozenAgent(t *testing.T) {
	pgid, done := startGroup(t)
	r, w := io.Pipe()
	defer w.Close()
	g := &guardian{groups: map[int]struct{}{}}
	go func() { _ = g.serve(r) }()
	renew := func(d time.Duration) {
		t.Helper()
		if _, err := io.WriteString(w, "D"+strconv.FormatInt(time.Now().Add(d).UnixNano(), 10)+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.WriteString(w, "+"+strconv.Itoa(pgid)+"\n"); err != nil {
		t.Fatal(err)
	}
	renew(400 * time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	renew(800 * time.Millisecond) // moved on: the first deadline no longer counts
	select {
	case <-done:
		t.Fatal("the group was killed before its deadline")
	case <-time.After(500 * time.Millisecond):
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the group's leader still runs 5s after the deadline")
	}
}

// TestGuardWaitsUntilTheGuardianIsReady: waitReady returns once the
// guardian has written its ready line, and fails when the guardian exits
// without it.
func TestGuardWaitsUntilTheGuardianIsReady(t *testing.T) {
	g, err := startGuard([]string{"sh", "-c", "sleep 0.2; printf 'ready\\n'; cat >/dev/null"}, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	select {
	case <-g.ready:
		t.Fatal("ready before the guardian said so")
	case <-time.After(50 * time.Millisecond):
	}
	if err := g.waitReady(10 * time.Second); err != nil {
		t.Fatalf("waitReady: %v", err)
	}
	gone, err := startGuard([]string{"sh", "-c", "exit 0"}, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer gone.close()
	if err := gone.waitReady(10 * time.Second); err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("waitReady of a guardian that exited: %v, want an error saying so", err)
	}
}
