package cli

import (
	"bytes"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// testEnv is an env with captured streams, a fixed clock, UTC, the given
// files and environment.
func testEnv(t *testing.T, files map[string]string, vars map[string]string) (*env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := newEnv(IO{
		In:  strings.NewReader(files["<stdin>"]),
		Out: &out,
		Err: &errOut,
		Env: func(k string) string { return vars[k] },
	})
	e.now = func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }
	e.loc = time.UTC
	e.readFile = func(name string) ([]byte, error) {
		data, ok := files[name]
		if !ok {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return []byte(data), nil
	}
	return e, &out, &errOut
}

func TestParseJobArgs(t *testing.T) {
	files := map[string]string{
		"build.sh":  "set -e\nmake\n",
		"job.yaml":  "name: from-file\ncommand: [echo, hi]\ntimeout: 30s\nlabels:\n  pool: a\nretry:\n  maxAttempts: 2\n",
		"job.json":  `{"command":["echo","hi"],"timeout":"30s","idempotency_key":"k"}`,
		"typo.yaml": "comand: [echo]\n",
		"<stdin>":   "script: echo from stdin\n",
	}
	tests := []struct {
		name     string
		cmd      string // "run" or "job submit"
		args     []string
		want     *hodeiv1.JobSpec
		wantAddr string
		wantErr  string // substring of the usage error
	}{
		{
			name: "command after dashes",
			args: []string{"--", "echo", "-n", "hi"},
			want: &hodeiv1.JobSpec{Command: []string{"echo", "-n", "hi"}},
		},
		{
			name: "command without dashes keeps its own flags",
			args: []string{"--name", "x", "ls", "-la", "--color"},
			want: &hodeiv1.JobSpec{Name: "x", Command: []string{"ls", "-la", "--color"}},
		},
		{
			name: "every job flag",
			args: []string{
				"--name", "build", "--image", "alpine:3", "--env", "A=1", "--env", "B=x=y", "--env", "A=2",
				"--label", "gpu=true", "--tag", "team=core", "--cpu", "500m", "--memory", "1Gi",
				"--timeout", "90s", "--max-attempts", "3", "--retry-exit-code", "2", "--retry-exit-code", "75",
				"--priority", "-5", "--type", "ci", "--idempotency-key", "k1", "--workdir", "/src",
				"--merge-output", "--", "make", "test",
			},
			want: &hodeiv1.JobSpec{
				Name:           "build",
				Command:        []string{"make", "test"},
				Image:          "alpine:3",
				Env:            map[string]string{"A": "2", "B": "x=y"},
				Workdir:        "/src",
				Labels:         map[string]string{"gpu": "true"},
				Resources:      &hodeiv1.Resources{CpuMillis: 500, MemoryMib: 1024},
				Timeout:        durationpb.New(90 * time.Second),
				Priority:       -5,
				Type:           "ci",
				Retry:          &hodeiv1.RetryPolicy{MaxAttempts: 3, RetryableExitCodes: []int32{2, 75}},
				IdempotencyKey: "k1",
				Tags:           map[string]string{"team": "core"},
				MergeOutput:    true,
			},
		},
		{
			name: "cpu in cores, memory bare MiB, zero timeout",
			args: []string{"--cpu", "2", "--memory", "256", "--timeout", "0s", "true"},
			want: &hodeiv1.JobSpec{Command: []string{"true"}, Resources: &hodeiv1.Resources{CpuMillis: 2000, MemoryMib: 256}},
		},
		{
			name: "script",
			args: []string{"--script", "build.sh"},
			want: &hodeiv1.JobSpec{Script: "set -e\nmake\n", Interpreter: "/bin/sh"},
		},
		{name: "script and command", args: []string{"--script", "build.sh", "make"}, wantErr: "--script and a command"},
		{name: "missing script", args: []string{"--script", "nope.sh"}, wantErr: "--script: open nope.sh"},
		{name: "no command", args: []string{"--name", "x"}, wantErr: "a command is required"},
		{name: "bad cpu", args: []string{"--cpu", "lots", "true"}, wantErr: `invalid value "lots" for flag -cpu`},
		{name: "bad memory", args: []string{"--memory", "1G", "true"}, wantErr: "flag -memory"},
		{name: "bad env", args: []string{"--env", "A", "true"}, wantErr: `flag -env: want KEY=VALUE`},
		{name: "bad label", args: []string{"--label", "=v", "true"}, wantErr: "flag -label"},
		{name: "bad timeout", args: []string{"--timeout", "5", "true"}, wantErr: "flag -timeout"},
		{name: "negative timeout", args: []string{"--timeout", "-1s", "true"}, wantErr: "flag -timeout: must not be negative"},
		{name: "bad max attempts", args: []string{"--max-attempts", "x", "true"}, wantErr: "flag -max-attempts"},
		{name: "bad priority", args: []string{"--priority", "99999999999", "true"}, wantErr: "flag -priority"},
		{name: "bad retry exit code", args: []string{"--retry-exit-code", "one", "true"}, wantErr: "flag -retry-exit-code"},
		{name: "unknown flag", args: []string{"--cpus", "1", "true"}, wantErr: "flag provided but not defined: -cpus"},
		{
			name:     "server with scheme",
			args:     []string{"--server", "http://10.0.0.1:9000/", "true"},
			want:     &hodeiv1.JobSpec{Command: []string{"true"}},
			wantAddr: "10.0.0.1:9000",
		},
		{name: "https server", args: []string{"--server", "https://h:1", "true"}, wantErr: "only http://"},
		{name: "server without port", args: []string{"--server", "h", "true"}, wantErr: "want host:port"},
		{
			name: "spec file in YAML, flags override",
			cmd:  "job submit",
			args: []string{"-f", "job.yaml", "--name", "override", "--label", "zone=b", "--max-attempts", "5", "-o", "json"},
			want: &hodeiv1.JobSpec{
				Name:    "override",
				Command: []string{"echo", "hi"},
				Timeout: durationpb.New(30 * time.Second),
				Labels:  map[string]string{"pool": "a", "zone": "b"},
				Retry:   &hodeiv1.RetryPolicy{MaxAttempts: 5},
			},
		},
		{
			name: "spec file in JSON with proto names",
			cmd:  "job submit",
			args: []string{"-f", "job.json"},
			want: &hodeiv1.JobSpec{Command: []string{"echo", "hi"}, Timeout: durationpb.New(30 * time.Second), IdempotencyKey: "k"},
		},
		{
			name: "spec file command replaced",
			cmd:  "job submit",
			args: []string{"-f", "job.json", "--", "date"},
			want: &hodeiv1.JobSpec{Command: []string{"date"}, Timeout: durationpb.New(30 * time.Second), IdempotencyKey: "k"},
		},
		{
			name: "spec from stdin",
			cmd:  "job submit",
			args: []string{"-f", "-"},
			want: &hodeiv1.JobSpec{Script: "echo from stdin"},
		},
		{name: "spec file with unknown field", cmd: "job submit", args: []string{"-f", "typo.yaml"}, wantErr: `unknown field "comand"`},
		{name: "missing spec file", cmd: "job submit", args: []string{"-f", "nope.yaml"}, wantErr: "-f: open nope.yaml"},
		{name: "run has no -f", args: []string{"-f", "job.yaml"}, wantErr: "flag provided but not defined: -f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, _ := testEnv(t, files, nil)
			cmd := tt.cmd
			if cmd == "" {
				cmd = "run"
			}
			addr, got, err := e.parseJobArgs(cmd, "", tt.args, cmd == "job submit")
			if tt.wantErr != "" {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want a usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("spec (-want +got):\n%s", diff)
			}
			wantAddr := tt.wantAddr
			if wantAddr == "" {
				wantAddr = DefaultServer
			}
			if addr != wantAddr {
				t.Errorf("addr = %q, want %q", addr, wantAddr)
			}
		})
	}
}

func TestServerFromEnv(t *testing.T) {
	e, _, _ := testEnv(t, nil, map[string]string{"HODEI_SERVER": "http://hodei.internal:7070"})
	addr, _, err := e.parseJobArgs("run", "", []string{"true"}, false)
	if err != nil || addr != "hodei.internal:7070" {
		t.Errorf("addr = %q, %v; want hodei.internal:7070 from HODEI_SERVER", addr, err)
	}
	addr, _, err = e.parseJobArgs("run", "", []string{"--server", "127.0.0.1:1", "true"}, false)
	if err != nil || addr != "127.0.0.1:1" {
		t.Errorf("addr = %q, %v; want --server to win over HODEI_SERVER", addr, err)
	}
}

func TestSpecFromFlagsDoesNotModifyBase(t *testing.T) {
	base := &hodeiv1.JobSpec{Command: []string{"a"}, Labels: map[string]string{"k": "v"}}
	f := &jobFlags{labels: KVFlag{"x": "y"}, set: map[string]bool{"label": true}}
	got, err := specFromFlags(f, base, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(base.Labels) != 1 || len(got.Labels) != 2 {
		t.Errorf("base labels %v, got labels %v; want the base untouched", base.Labels, got.Labels)
	}
}
