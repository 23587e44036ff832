package cli

import (
	"regexp"
	"strings"
	"testing"
)

// helpFlags returns the flags `hodei <words> -h` lists.
func helpFlags(t *testing.T, words []string) map[string]bool {
	t.Helper()
	code, stdout, stderr := runMain(t, t.Context(), append(words, "-h")...)
	if code != ExitOK {
		t.Fatalf("%q -h: exit %d, stderr %q", words, code, stderr)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z][a-z-]*)`).FindAllStringSubmatch(stdout, -1) {
		flags[m[1]] = true
	}
	if len(flags) == 0 {
		t.Fatalf("%q -h lists no flags:\n%s", words, stdout)
	}
	return flags
}

// TestHintsNameExistingFlags: every flag an error's hint names is a flag
// of the command that printed it.
func TestHintsNameExistingFlags(t *testing.T) {
	flagRe := regexp.MustCompile(`(?:^|[\s(,])--?([a-z][a-z-]*)`)
	for _, tc := range []struct {
		words []string // the command
		args  []string // what makes it fail
		hint  string   // what its hint says
	}{
		{[]string{"run"}, nil, "a command is required"},
		{[]string{"run"}, []string{"--name", "x"}, "a command is required"},
		{[]string{"run"}, []string{"--script", "f", "--", "true"}, "exclude"},
		{[]string{"job", "submit"}, nil, "a command is required"},
		{[]string{"job", "submit"}, []string{"-f", "/nonexistent/spec.yaml"}, "-f"},
		{[]string{"job", "list"}, []string{"--limit", "-1"}, "--limit"},
		{[]string{"job", "logs"}, []string{"x", "--attempt", "-1"}, "--attempt"},
		{[]string{"events", "tail"}, []string{"--aggregate", ":x"}, "--aggregate"},
		{[]string{"provider", "set"}, []string{"p", "--ephemeral", "x"}, "--ephemeral"},
		{[]string{"webhook", "add"}, []string{"n", "http://x"}, "--type"},
		{[]string{"webhook", "add"}, []string{"n", "http://x", "--type", "JobCreated", "--secret-file", "/nonexistent/s"}, "--secret-file"},
		{[]string{"webhook", "replay"}, []string{"n"}, "--id"},
		{[]string{"webhook", "deliveries"}, []string{"n", "--limit", "-1"}, "--limit"},
		{[]string{"job", "get"}, []string{"x", "--connect-timeout", "0"}, "-connect-timeout"},
	} {
		have := helpFlags(t, tc.words)
		code, _, stderr := runMain(t, t.Context(), append(tc.words, tc.args...)...)
		line, _, _ := strings.Cut(stderr, "\n")
		if code != ExitUsage || !strings.Contains(line, tc.hint) {
			t.Errorf("%q: exit %d, first line %q; want %d and a hint about %s", append(tc.words, tc.args...), code, line, ExitUsage, tc.hint)
			continue
		}
		for _, m := range flagRe.FindAllStringSubmatch(line, -1) {
			if !have[m[1]] {
				t.Errorf("%q: the hint %q names -%s, which %q does not have", append(tc.words, tc.args...), line, m[1], strings.Join(tc.words, " "))
			}
		}
	}
}
