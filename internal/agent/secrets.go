package agent

import (
	"bytes"
	"sync/atomic"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/agent/runner"
	"github.com/hodei-dev/hodei/internal/redact"
)

// redactor masks an attempt's secrets in its output before the batcher
// sees it: one stream per output stream, so that a value split across two
// reads is caught. Attempts without secrets have none and pay nothing.
type redactor struct {
	set      *redact.Set
	cmd      []string          // the exec shim
	input    []byte            // the shim's stdin: the secrets as JSON
	streams  [3]*redact.Stream // by runner.Stream
	last     [3]int64          // each stream's redactions already counted
	count    atomic.Int64
	reported int64 // count already sent in a batch (the batcher's goroutine)
}

// prepareSecrets builds the redactor of an attempt with secrets and proves
// it on the canary: split across two writes, raw and base64, it must come
// out masked. It returns nil and why when the attempt must not start.
func (a *Agent) prepareSecrets(r *hodeiv1.RunJob) (*redactor, string) {
	switch {
	case r.SecretError != "":
		return nil, r.SecretError
	case len(a.cfg.ExecShim) == 0:
		return nil, "this worker has no exec shim to hand secrets to a job"
	case len(r.Canary) < redact.MinPattern:
		return nil, "the attempt's secrets came without a canary"
	}
	secrets := make([]redact.Secret, 0, len(r.Secrets)+1)
	for _, s := range r.Secrets {
		secrets = append(secrets, redact.Secret{Name: s.Name, Value: s.Value})
	}
	secrets = append(secrets, redact.Secret{Name: "canary", Value: []byte(r.Canary)})
	set := redact.NewSet(secrets)
	if !selfTest(set, []byte(r.Canary)) {
		return nil, "the redactor failed its self-test on the canary"
	}
	input, err := shimPayload(r.Secrets)
	if err != nil {
		return nil, "encode the secrets for the exec shim"
	}
	return &redactor{set: set, cmd: a.cfg.ExecShim, input: input}, ""
}

// selfTest passes canary through a stream, split in the middle, in clear
// and as its variants, and checks that none of it comes out.
func selfTest(set *redact.Set, canary []byte) bool {
	for _, v := range redact.Variants(canary) {
		var out bytes.Buffer
		st := redact.NewStream(set, func(p []byte) { out.Write(p) })
		text := append(append([]byte("canary:"), v...), '\n')
		st.Write(text[:len(text)/2])
		st.Write(text[len(text)/2:])
		st.Flush()
		if bytes.Contains(out.Bytes(), canary) || bytes.Contains(out.Bytes(), v) || st.Redactions() != 1 {
			return false
		}
	}
	return true
}

// wrap returns write with the redaction in front of it. Each output
// stream is written by one goroutine at a time (runner.Run), which alone
// touches its redact.Stream and its last count.
func (r *redactor) wrap(write func(runner.Stream, []byte)) func(runner.Stream, []byte) {
	for s := range r.streams {
		r.streams[s] = redact.NewStream(r.set, func(p []byte) { write(runner.Stream(s), p) })
	}
	return func(s runner.Stream, p []byte) {
		st := r.streams[s]
		st.Write(p)
		if n := st.Redactions(); n != r.last[s] {
			r.count.Add(n - r.last[s])
			r.last[s] = n
		}
	}
}

// flush passes on what the streams held back, once the process is gone
// and its output drained.
func (r *redactor) flush() {
	for s, st := range r.streams {
		if st != nil {
			st.Flush()
			r.count.Add(st.Redactions() - r.last[s])
			r.last[s] = st.Redactions()
		}
	}
}

// take returns the redactions not yet reported in a batch.
func (r *redactor) take() int64 {
	n := r.count.Load()
	d := n - r.reported
	r.reported = n
	return d
}

func (r *redactor) shim() []string {
	if r == nil {
		return nil
	}
	return r.cmd
}

func (r *redactor) shimInput() []byte {
	if r == nil {
		return nil
	}
	return r.input
}

// forgetSecrets drops the values of r's secrets (best effort: the bytes
// are overwritten, copies the runtime made are not).
func forgetSecrets(r *hodeiv1.RunJob) {
	for _, s := range r.Secrets {
		clear(s.Value)
	}
	r.Secrets, r.Canary = nil, ""
}
