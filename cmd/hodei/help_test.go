package main

import (
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
		{"run"}, {"job"}, {"events"}, {"events", "tail"}, {"provider"}, {"webhook"}, {"jobtype"}, {"secret"},
		{"token"}, {"token", "create"}, {"token", "list"}, {"token", "revoke"},
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
	for _, sub := range []string{"set", "list", "delete", "rotate-key", "audit"} {
		commands = append(commands, []string{"secret", sub})
	}
	noServer := serverProc{addr: "127.0.0.1:1"} // nothing listens there
	for _, words := range commands {
		for _, h := range []string{"-h", "-help", "--help"} {
			args := append(append([]string{}, words...), h)
			r := noServer.hodei(t, args...)
			if r.code != 0 || strings.TrimSpace(r.stdout) == "" || r.stderr != "" {
				t.Errorf("hodei %s: exit %d, stdout %.80q, stderr %q; want 0, the help on stdout", strings.Join(args, " "), r.code, r.stdout, r.stderr)
			}
		}
	}
	for _, words := range [][]string{{"dev"}, {"server"}, {"agent"}, {"bench", "startup"}} {
		args := append(append([]string{}, words...), "--no-such-flag")
		if r := noServer.hodei(t, args...); r.code != 2 || !strings.Contains(r.stderr, "no-such-flag") {
			t.Errorf("hodei %s: exit %d, stderr %q; want 2 and the flag named", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}
