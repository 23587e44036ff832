package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWebhookUsageErrors(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	add := []string{"webhook", "add", "ci", "https://ci.example/hook"}
	tests := []struct {
		args       []string
		wantCode   int
		wantStderr string
		wantStdout string
	}{
		{args: []string{"webhook"}, wantCode: ExitUsage, wantStderr: "missing subcommand"},
		{args: []string{"webhook", "frob"}, wantCode: ExitUsage, wantStderr: `unknown subcommand "frob"`},
		{args: []string{"webhook", "-h"}, wantCode: ExitOK, wantStdout: "webhook replay NAME"},
		{args: []string{"webhook", "add", "ci"}, wantCode: ExitUsage, wantStderr: "want NAME URL"},
		{args: add, wantCode: ExitUsage, wantStderr: "at least one --type"},
		{args: append(add, "--type", "JobFailed", "--label", "team"), wantCode: ExitUsage, wantStderr: "flag -label: want KEY=VALUE"},
		{args: append(add, "--type", ""), wantCode: ExitUsage, wantStderr: "flag -type"},
		{args: append(add, "--type", "JobFailed", "--max-attempts", "x"), wantCode: ExitUsage, wantStderr: "flag -max-attempts"},
		{args: append(add, "--type", "JobFailed", "--secret-file", "/nonexistent/secret"), wantCode: ExitUsage, wantStderr: "--secret-file"},
		{args: append(add, "--type", "JobFailed", "--secret-file", empty), wantCode: ExitUsage, wantStderr: "is empty"},
		{args: []string{"webhook", "list", "extra"}, wantCode: ExitUsage, wantStderr: `unexpected argument "extra"`},
		{args: []string{"webhook", "remove"}, wantCode: ExitUsage, wantStderr: "want NAME"},
		{args: []string{"webhook", "deliveries", "ci", "--limit", "-1"}, wantCode: ExitUsage, wantStderr: "--limit"},
		{args: []string{"webhook", "replay", "ci"}, wantCode: ExitUsage, wantStderr: "give --id (repeatable) or --all"},
		{args: []string{"webhook", "replay", "ci", "--id", "3", "--all"}, wantCode: ExitUsage, wantStderr: "give --id (repeatable) or --all"},
		{args: []string{"webhook", "replay", "ci", "--id", "0"}, wantCode: ExitUsage, wantStderr: "flag -id: want an event id"},
		{args: []string{"webhook", "list", "-o", "xml"}, wantCode: ExitUsage, wantStderr: "flag -o"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runMain(t, t.Context(), tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.wantStderr)
			}
			if !strings.Contains(stdout, tt.wantStdout) {
				t.Errorf("stdout = %q, want it to contain %q", stdout, tt.wantStdout)
			}
		})
	}
}

func TestWebhookUnreachableServer(t *testing.T) {
	addr := closedAddr(t)
	for _, args := range [][]string{
		{"webhook", "add", "ci", "https://ci.example/hook", "--type", "JobFailed", "--server", addr},
		{"webhook", "list", "--server", addr},
		{"webhook", "replay", "ci", "--all", "--server", addr},
	} {
		code, _, stderr := runMain(t, t.Context(), args...)
		if code != ExitError || !strings.HasPrefix(stderr, "hodei: unavailable: ") {
			t.Errorf("hodei %v: exit %d, stderr %q; want 1 and unavailable", args, code, stderr)
		}
	}
}
