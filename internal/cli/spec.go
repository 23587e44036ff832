package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// jobFlags are the flags shared by run and job submit.
type jobFlags struct {
	name, image, workdir  string
	typ, idempotencyKey   string
	script                string
	env, labels, tags     KVFlag
	cpu                   cpuFlag
	memory                memoryFlag
	timeout               durationFlag
	maxAttempts, priority int32Flag
	retryExitCodes        int32sFlag
	mergeOutput           bool
	secrets               secretsFlag

	// set holds the names of the flags given on the command line, so a
	// spec file is overridden only by what the user said.
	set map[string]bool
}

func (f *jobFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "job `name`")
	fs.StringVar(&f.image, "image", "", "run in a worker of this `image`")
	fs.Var(&f.env, "env", "environment variable `K=V` (repeatable)")
	fs.Var(&f.labels, "label", "required worker label `K=V` (repeatable)")
	fs.Var(&f.tags, "tag", "tag `K=V` (repeatable)")
	fs.Var(&f.cpu, "cpu", "CPU `quantity`: 500m, 0.5, 2")
	fs.Var(&f.memory, "memory", "memory `quantity` in MiB: 256, 512Mi, 1Gi")
	fs.Var(&f.timeout, "timeout", "timeout as a Go `duration`: 30s, 5m")
	fs.Var(&f.maxAttempts, "max-attempts", "`N` attempts in all, the first included (0: the job type's, else 3 for platform failures only)")
	fs.Var(&f.retryExitCodes, "retry-exit-code", "retry when the job exits with this `code` (repeatable; needs --max-attempts or a job type's)")
	fs.Var(&f.priority, "priority", "scheduling priority `N`, higher first")
	fs.StringVar(&f.typ, "type", "", "job `type`")
	fs.StringVar(&f.idempotencyKey, "idempotency-key", "", "a second submission with this `key` returns the first job")
	fs.StringVar(&f.workdir, "workdir", "", "working `directory` (absolute)")
	fs.StringVar(&f.script, "script", "", "run this `file` with /bin/sh instead of a command")
	fs.Var(&f.secrets, "secret", "stored secret `NAME` as SECRET_NAME, or ENV=NAME as ENV (repeatable)")
	fs.BoolVar(&f.mergeOutput, "merge-output", false, "send stderr into stdout's pipe: the log keeps the exact write order, all lines as stdout")
}

// collect records which flags fs saw; call it after parsing.
func (f *jobFlags) collect(fs *flag.FlagSet) {
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
}

// parseJobArgs parses the command line of run (withFile false) or job
// submit (withFile true: -f FILE and an ignored -o) into the server
// address and the JobSpec to submit.
func (e *env) parseJobArgs(name, synopsis string, args []string, withFile bool) (addr string, spec *hodeiv1.JobSpec, err error) {
	fs := e.flagSet(name)
	server := e.serverFlag(fs)
	var jf jobFlags
	jf.register(fs)
	var file *string
	if withFile {
		file = fs.String("f", "", "read the JobSpec from `file` (YAML or JSON; - for stdin)")
		outputFlag(fs, formatTable, formatJSON, formatYAML) // accepted; submit prints the id only
	}
	command, err := e.parse(fs, synopsis, args, false)
	if err != nil {
		return "", nil, err
	}
	jf.collect(fs)
	if addr, err = serverAddr(*server); err != nil {
		return "", nil, usagef("%v", err)
	}
	var base *hodeiv1.JobSpec
	if file != nil && *file != "" {
		var data []byte
		if *file == "-" {
			data, err = io.ReadAll(e.In)
		} else {
			data, err = e.readFile(*file)
		}
		if err != nil {
			return "", nil, usagef("-f: %v", err)
		}
		if base, err = parseSpecFile(data); err != nil {
			return "", nil, usagef("-f %s: %v", *file, err)
		}
	}
	spec, err = specFromFlags(&jf, base, command, e.readFile)
	if errors.Is(err, errNoCommand) {
		hint := "[flags] -- CMD [ARGS...] or --script FILE"
		if withFile {
			hint = "[flags] -- CMD [ARGS...], --script FILE or -f FILE"
		}
		return "", nil, usagef("%s: a command is required: hodei %s %s", name, name, hint)
	}
	if err != nil {
		return "", nil, err
	}
	return addr, spec, nil
}

// errNoCommand is a spec with neither a command nor a script.
var errNoCommand = errors.New("a command is required")

// specFromFlags builds a JobSpec: base (a spec file, or nil), then every
// flag that was given, then the command. readFile reads --script. Errors
// are usage errors.
func specFromFlags(f *jobFlags, base *hodeiv1.JobSpec, command []string, readFile func(string) ([]byte, error)) (*hodeiv1.JobSpec, error) {
	spec := &hodeiv1.JobSpec{}
	if base != nil {
		spec = proto.Clone(base).(*hodeiv1.JobSpec)
	}
	set := f.set
	if set["name"] {
		spec.Name = f.name
	}
	if set["image"] {
		spec.Image = f.image
	}
	if set["workdir"] {
		spec.Workdir = f.workdir
	}
	if set["type"] {
		spec.Type = f.typ
	}
	if set["idempotency-key"] {
		spec.IdempotencyKey = f.idempotencyKey
	}
	if set["priority"] {
		spec.Priority = int32(f.priority)
	}
	if set["merge-output"] {
		spec.MergeOutput = f.mergeOutput
	}
	spec.Env = mergeMap(spec.Env, f.env)
	spec.Secrets = append(spec.Secrets, f.secrets...)
	spec.Labels = mergeMap(spec.Labels, f.labels)
	spec.Tags = mergeMap(spec.Tags, f.tags)
	if set["cpu"] || set["memory"] {
		if spec.Resources == nil {
			spec.Resources = &hodeiv1.Resources{}
		}
		if set["cpu"] {
			spec.Resources.CpuMillis = int64(f.cpu)
		}
		if set["memory"] {
			spec.Resources.MemoryMib = int64(f.memory)
		}
	}
	if set["timeout"] {
		spec.Timeout = nil
		if f.timeout > 0 {
			spec.Timeout = durationpb.New(time.Duration(f.timeout))
		}
	}
	if set["max-attempts"] || set["retry-exit-code"] {
		if spec.Retry == nil {
			spec.Retry = &hodeiv1.RetryPolicy{}
		}
		if set["max-attempts"] {
			spec.Retry.MaxAttempts = int32(f.maxAttempts)
		}
		if set["retry-exit-code"] {
			spec.Retry.RetryableExitCodes = slices.Clone(f.retryExitCodes)
		}
	}

	if set["script"] {
		if len(command) > 0 {
			return nil, usagef("--script and a command exclude each other")
		}
		data, err := readFile(f.script)
		if err != nil {
			return nil, usagef("--script: %v", err)
		}
		spec.Script = string(data)
		spec.Command = nil
		if spec.Interpreter == "" {
			spec.Interpreter = "/bin/sh"
		}
	}
	if len(command) > 0 {
		spec.Command = slices.Clone(command)
		spec.Script = ""
		spec.Interpreter = ""
	}
	if len(spec.Command) == 0 && spec.Script == "" {
		return nil, errNoCommand
	}
	return spec, nil
}

func mergeMap(dst map[string]string, src KVFlag) map[string]string {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = map[string]string{}
	}
	maps.Copy(dst, src)
	return dst
}

// parseSpecFile parses a JobSpec in the proto JSON mapping, written as
// JSON or YAML ({"command": ["echo", "hi"], "timeout": "30s"}). Unknown
// fields are errors, so typos do not pass silently.
func parseSpecFile(data []byte) (*hodeiv1.JobSpec, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("empty job spec")
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	spec := &hodeiv1.JobSpec{}
	if err := protojson.Unmarshal(js, spec); err != nil {
		return nil, err
	}
	return spec, nil
}

// secretsFlag is --secret NAME or --secret ENV=NAME, repeatable: a
// reference to a stored secret, never a value.
type secretsFlag []*hodeiv1.SecretRef

func (f *secretsFlag) String() string { return fmt.Sprint(len(*f), " secrets") }

func (f *secretsFlag) Set(v string) error {
	env, name, ok := strings.Cut(v, "=")
	if !ok {
		env, name = "", v
	}
	if name == "" || ok && env == "" {
		return fmt.Errorf("%q: want NAME or ENV=NAME", v)
	}
	*f = append(*f, &hodeiv1.SecretRef{Name: name, Env: env})
	return nil
}
