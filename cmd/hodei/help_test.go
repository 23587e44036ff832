package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestHelpExitsZero: every command and subcommand of the binary prints its
// help to stdout and exits 0 on -h, -help and --help; a bad flag still
// exits 2.
func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	commands := [][]string{
		{}, {"dev"}, {"server"}, {"agent"}, {"testdb"}, {"bench"},
		{"bench", "startup"}, {"bench", "events"}, {"bench", "dispatch"}, {"bench", "throughput"},
		{"bench", "logs"}, {"bench", "provision"}, {"bench", "emit"},
		{"run"}, {"job"}, {"events"}, {"events", "tail"}, {"provider"}, {"webhook"}, {"jobtype"},
	}
	for _, sub := range []string{"set", "list", "get", "delete"} {
		commands = append(commands, []string{"jobtype", sub})
	}
	for _, sub := range []string{"submit", "get", "list", "cancel", "retry", "logs", "watch", "explain"} {
		commands = append(commands, []string{"job", sub})
	}
	for _, sub := range []string{"list", "get", "enable", "disable", "set"} {
		commands = append(commands, []string{"provider", sub})
	}
	for _, sub := range []string{"add", "list", "remove", "deliveries", "replay"} {
		commands = append(commands, []string{"webhook", sub})
	}
	for _, words := range commands {
		for _, h := range []string{"-h", "-help", "--help"} {
			args := append(append([]string{}, words...), h)
			code, stdout, stderr := runBinary(t, args...)
			if code != 0 || strings.TrimSpace(stdout) == "" || stderr != "" {
				t.Errorf("hodei %s: exit %d, stdout %.80q, stderr %q; want 0, the help on stdout", strings.Join(args, " "), code, stdout, stderr)
			}
		}
	}
	for _, words := range [][]string{{"dev"}, {"server"}, {"agent"}, {"bench", "startup"}} {
		args := append(append([]string{}, words...), "--no-such-flag")
		if code, _, stderr := runBinary(t, args...); code != 2 || !strings.Contains(stderr, "no-such-flag") {
			t.Errorf("hodei %s: exit %d, stderr %q; want 2 and the flag named", strings.Join(args, " "), code, stderr)
		}
	}
}

// runBinary runs the hodei binary with args, without a server.
func runBinary(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(hodeiBin, args...)
	cmd.Env = []string{"HODEI_SERVER=127.0.0.1:1"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("hodei %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}
