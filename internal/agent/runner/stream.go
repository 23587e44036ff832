// Package runner executes job processes for the agent and turns their
// output into batches of log lines.
//
// [Run] starts one process in its own process group, streams its stdout and
// stderr as raw bytes, and makes sure that neither the process nor anything it
// started in its process group outlives the call. [Batcher] splits such byte
// streams into lines and hands them, in bounded batches, to a sender that may
// be slow or failing, dropping the oldest lines rather than blocking the
// process when its buffer is full.
package runner

import "fmt"

// Stream identifies an output stream of a process.
type Stream uint8

// The output streams of a process.
const (
	StreamStdout Stream = 1
	StreamStderr Stream = 2
)

// String returns "stdout", "stderr" or "stream(N)".
func (s Stream) String() string {
	switch s {
	case StreamStdout:
		return "stdout"
	case StreamStderr:
		return "stderr"
	}
	return fmt.Sprintf("stream(%d)", uint8(s))
}
