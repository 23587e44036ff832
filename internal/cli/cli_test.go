package cli

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
)

// runMain runs Main with captured output.
func runMain(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(ctx, args, IO{In: strings.NewReader(""), Out: &out, Err: &errOut, Env: func(string) string { return "" }})
	return code, out.String(), errOut.String()
}

func TestMainUsageErrors(t *testing.T) {
	tests := []struct {
		args       []string
		wantCode   int
		wantStderr string // substring
		wantStdout string // substring
	}{
		{args: nil, wantCode: ExitUsage, wantStderr: "Commands:"},
		{args: []string{"help"}, wantCode: ExitOK, wantStdout: "job list"},
		{args: []string{"frobnicate"}, wantCode: ExitUsage, wantStderr: `hodei: unknown command "frobnicate"`},
		{args: []string{"run"}, wantCode: ExitUsage, wantStderr: "a command is required"},
		{args: []string{"run", "--cpu", "x", "--", "true"}, wantCode: ExitUsage, wantStderr: `invalid value "x" for flag -cpu`},
		{args: []string{"run", "--memory", "1G", "true"}, wantCode: ExitUsage, wantStderr: "flag -memory"},
		{args: []string{"run", "-h"}, wantCode: ExitOK, wantStdout: "-retry-exit-code"},
		{args: []string{"job"}, wantCode: ExitUsage, wantStderr: "missing subcommand"},
		{args: []string{"job", "frob"}, wantCode: ExitUsage, wantStderr: `unknown subcommand "frob"`},
		{args: []string{"job", "get"}, wantCode: ExitUsage, wantStderr: "want exactly one job ID"},
		{args: []string{"job", "get", "a", "b"}, wantCode: ExitUsage, wantStderr: "want exactly one job ID"},
		{args: []string{"job", "get", "a", "-o", "xml"}, wantCode: ExitUsage, wantStderr: "flag -o: want one of table, json, yaml"},
		{args: []string{"job", "list", "--state", "bogus"}, wantCode: ExitUsage, wantStderr: `flag -state: unknown state "bogus"`},
		{args: []string{"job", "list", "extra"}, wantCode: ExitUsage, wantStderr: `unexpected argument "extra"`},
		{args: []string{"job", "list", "--limit", "-1"}, wantCode: ExitUsage, wantStderr: "--limit"},
		{args: []string{"job", "logs", "a", "--attempt", "x"}, wantCode: ExitUsage, wantStderr: "flag -attempt"},
		{args: []string{"job", "submit"}, wantCode: ExitUsage, wantStderr: "a command is required"},
		{args: []string{"job", "submit", "--server", "ftp://x:1", "true"}, wantCode: ExitUsage, wantStderr: "only https://"},
		{args: []string{"events"}, wantCode: ExitUsage, wantStderr: "events tail"},
		{args: []string{"events", "tail", "--aggregate", ":x"}, wantCode: ExitUsage, wantStderr: "--aggregate"},
		{args: []string{"events", "tail", "--after", "-3"}, wantCode: ExitUsage, wantStderr: "flag -after"},
		{args: []string{"events", "tail", "-o", "yaml"}, wantCode: ExitUsage, wantStderr: "want one of table, json"},
		{args: []string{"provider"}, wantCode: ExitUsage, wantStderr: "provider list"},
		{args: []string{"job", "--help"}, wantCode: ExitOK, wantStdout: "submit|get|list"},
		{args: []string{"events", "-h"}, wantCode: ExitOK, wantStdout: "events tail"},
		{args: []string{"job", "get", "-h"}, wantCode: ExitOK, wantStdout: "usage: hodei job get ID"},
		{args: []string{"job", "list", "--server", "ftp://x:1"}, wantCode: ExitUsage, wantStderr: "only https://"},
		{args: []string{"job", "get", "j1", "--server", "ftp://x:1"}, wantCode: ExitUsage, wantStderr: "only https://"},
		{args: []string{"job", "logs", "a", "--attempt", "-1"}, wantCode: ExitUsage, wantStderr: "job logs: --attempt must not be negative"},
		{args: []string{"events", "tail", "extra"}, wantCode: ExitUsage, wantStderr: `events tail: unexpected argument "extra"`},
		{args: []string{"events", "tail", "--server", "ftp://x:1"}, wantCode: ExitUsage, wantStderr: "only https://"},
		{args: []string{"provider", "help"}, wantCode: ExitOK, wantStdout: "provider set NAME"},
		{args: []string{"provider", "frob"}, wantCode: ExitUsage, wantStderr: "usage: hodei provider list|get"},
		{args: []string{"provider", "get"}, wantCode: ExitUsage, wantStderr: "provider get: want 1 argument(s), got 0"},
		{args: []string{"provider", "list", "--server", "ftp://x:1"}, wantCode: ExitUsage, wantStderr: "only https://"},
		{args: []string{"provider", "set", "process"}, wantCode: ExitUsage, wantStderr: "provider set: nothing to set"},
		{args: []string{"provider", "set", "process", "--ephemeral", "maybe"}, wantCode: ExitUsage, wantStderr: `--ephemeral: want true or false, got "maybe"`},
		{args: []string{"jobtype"}, wantCode: ExitUsage, wantStderr: "jobtype: missing subcommand"},
		{args: []string{"jobtype", "frob"}, wantCode: ExitUsage, wantStderr: `jobtype: unknown subcommand "frob"`},
		{args: []string{"jobtype", "help"}, wantCode: ExitOK, wantStdout: "hodei jobtype set TYPE"},
		{args: []string{"jobtype", "list", "--server", "ftp://x:1"}, wantCode: ExitUsage, wantStderr: "only https://"},
		{args: []string{"secret", "help"}, wantCode: ExitOK, wantStdout: "hodei secret rotate-key"},
		{args: []string{"token"}, wantCode: ExitUsage, wantStderr: "token: missing subcommand"},
		{args: []string{"token", "frob"}, wantCode: ExitUsage, wantStderr: `token: unknown subcommand "frob"`},
		{args: []string{"token", "help"}, wantCode: ExitOK, wantStdout: "hodei token create NAME"},
		{args: []string{"token", "create", "ci"}, wantCode: ExitUsage, wantStderr: "token create: at least one --scope is required"},
		{args: []string{"token", "create", "ci", "--scope", "admin", "--ttl", "-1s"}, wantCode: ExitUsage, wantStderr: "token create: --ttl -1s: must not be negative"},
		{args: []string{"token", "create", "ci", "--scope", "admin", "--database"}, wantCode: ExitUsage, wantStderr: "token create: --database is not available here"},
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

func TestParseInterspersed(t *testing.T) {
	e, _, _ := testEnv(t, nil, nil)
	fs := e.flagSet("job get")
	format := outputFlag(fs, formatTable, formatJSON)
	pos, err := e.parse(fs, "ID", []string{"abc", "-o", "json", "--", "-def"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if format.value != formatJSON || strings.Join(pos, " ") != "abc -def" {
		t.Errorf("format %q, positional %q; want json and [abc -def]", format.value, pos)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestUnreachableServer(t *testing.T) {
	addr := closedAddr(t)
	tests := []struct {
		args     []string
		wantCode int
	}{
		{args: []string{"run", "--server", addr, "--", "true"}, wantCode: ExitPlatform},
		{args: []string{"job", "submit", "--server", addr, "--", "true"}, wantCode: ExitError},
		{args: []string{"job", "get", "j1", "--server", "http://" + addr}, wantCode: ExitError},
		{args: []string{"job", "list", "--server", addr}, wantCode: ExitError},
		{args: []string{"provider", "list", "--server", addr}, wantCode: ExitError},
	}
	for _, tt := range tests {
		t.Run(tt.args[0]+" "+tt.args[1], func(t *testing.T) {
			code, _, stderr := runMain(t, t.Context(), tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			if !strings.HasPrefix(stderr, "hodei: unavailable: ") {
				t.Errorf("stderr = %q, want a line starting with %q", stderr, "hodei: unavailable: ")
			}
		})
	}
}

func TestRunInterruptedBeforeSubmit(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	code, _, stderr := runMain(t, ctx, "run", "--server", closedAddr(t), "--", "true")
	if code != ExitCancelled {
		t.Errorf("exit code = %d, want %d; stderr:\n%s", code, ExitCancelled, stderr)
	}
}
