package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// ShimCommand is the subcommand of the hodei binary that runs the exec
// shim (RunExecShim).
const ShimCommand = "exec-shim"

// shimInput is what the agent writes to the exec shim's stdin: the
// secrets as "NAME=VALUE" environment entries.
type shimInput struct {
	Env []string `json:"env"`
}

// maxShimInput bounds what the shim reads: 64 secrets of 32 KiB, encoded.
const maxShimInput = 8 << 20

// shimPayload is the shim's input for an attempt's secrets.
func shimPayload(secrets []*hodeiv1.SecretValue) ([]byte, error) {
	in := shimInput{Env: make([]string, len(secrets))}
	for i, s := range secrets {
		in.Env[i] = s.Env + "=" + string(s.Value)
	}
	return json.Marshal(in)
}

// RunExecShim is the exec shim (`hodei exec-shim PATH ARGV...`): it
// reads the secrets the agent wrote to its stdin as JSON, puts /dev/null
// in the place of its stdin, adds the secrets to its environment and
// execs PATH with ARGV. It returns only on failure, and its errors never
// hold a value.
func RunExecShim(stdin *os.File, args []string) error {
	if len(args) < 2 {
		return errors.New("exec-shim: want PATH ARGV0 [ARGS...]")
	}
	data, err := io.ReadAll(io.LimitReader(stdin, maxShimInput+1))
	if err != nil || len(data) > maxShimInput {
		return errors.New("exec-shim: cannot read the secrets from stdin")
	}
	var in shimInput
	err = json.Unmarshal(data, &in)
	clear(data)
	if err != nil {
		return errors.New("exec-shim: the secrets on stdin are not valid JSON") // the decoder's error may quote them
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("exec-shim: %w", err)
	}
	if err := dupOnto(int(null.Fd()), int(stdin.Fd())); err != nil {
		return fmt.Errorf("exec-shim: replace stdin: %w", err)
	}
	env := append(os.Environ(), in.Env...)
	if err := syscall.Exec(args[0], args[1:], env); err != nil {
		return fmt.Errorf("exec-shim: exec %s: %w", args[0], err)
	}
	return nil
}
