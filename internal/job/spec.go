package job

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Spec is everything a user says about a job. The JSON form is how the
// store keeps it.
type Spec struct {
	Name           string            `json:"name,omitempty"`
	Command        []string          `json:"command,omitempty"`
	Script         string            `json:"script,omitempty"`
	Interpreter    string            `json:"interpreter,omitempty"`
	Image          string            `json:"image,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	Workdir        string            `json:"workdir,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	CPUMillis      int64             `json:"cpu_millis,omitempty"`
	MemoryMiB      int64             `json:"memory_mib,omitempty"`
	Timeout        time.Duration     `json:"timeout,omitempty"`
	Priority       int32             `json:"priority,omitempty"`
	Type           string            `json:"type,omitempty"`
	Retry          RetryPolicy       `json:"retry,omitzero"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	MergeOutput    bool              `json:"merge_output,omitempty"`
	Secrets        []SecretRef       `json:"secrets,omitempty"`
}

// SecretRef exposes the stored secret Name to the job as the environment
// variable Env (empty: SECRET_ and the name in upper case, '.' and '-' as
// '_'). A spec holds references only, never values.
type SecretRef struct {
	Name string `json:"name"`
	Env  string `json:"env,omitempty"`
}

// SecretEnv is the variable r is exposed as.
func (r SecretRef) SecretEnv() string {
	if r.Env != "" {
		return r.Env
	}
	return "SECRET_" + strings.Map(func(c rune) rune {
		switch {
		case c == '.' || c == '-':
			return '_'
		case c >= 'a' && c <= 'z':
			return c - 'a' + 'A'
		}
		return c
	}, r.Name)
}

// SecretNames lists the names of the secrets s references.
func (s *Spec) SecretNames() []string {
	names := make([]string, len(s.Secrets))
	for i, r := range s.Secrets {
		names[i] = r.Name
	}
	return names
}

// RetryPolicy decides whether and when a failed attempt is retried. Zero
// fields take the defaults below.
type RetryPolicy struct {
	MaxAttempts        int            `json:"max_attempts,omitempty"`
	InitialBackoff     time.Duration  `json:"initial_backoff,omitempty"`
	MaxBackoff         time.Duration  `json:"max_backoff,omitempty"`
	Jitter             float64        `json:"jitter,omitempty"`
	RetryableClasses   []FailureClass `json:"retryable_classes,omitempty"`
	RetryableExitCodes []int32        `json:"retryable_exit_codes,omitempty"`
}

// Defaults and limits. They are part of the API contract (docs/jobs.md).
const (
	DefaultInterpreter    = "/bin/sh"
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 32 * time.Second
	DefaultJitter         = 0.25

	MaxNameLen        = 200
	MaxArgs           = 1000
	MaxCommandBytes   = 128 << 10
	MaxScriptBytes    = 1 << 20
	MaxPathLen        = 4096 // interpreter, workdir: Linux's PATH_MAX
	MaxEnvVars        = 256
	MaxEnvBytes       = 128 << 10
	MaxLabels         = 32
	MaxLabelKeyLen    = 63
	MaxLabelValueLen  = 255
	MaxImageLen       = 255
	MaxTypeLen        = 63
	MaxIdempotencyLen = 255
	MaxTimeout        = 7 * 24 * time.Hour
	MaxPriority       = 1000
	MaxAttemptsLimit  = 100
	MaxRetryableCodes = 255 // retry.retryable_exit_codes entries: one per exit code 1-255
	MaxRetryableKinds = 4   // retry.retryable_classes entries: one per retryable class
	MaxBackoffLimit   = time.Hour
	MaxCPUMillis      = 1_000_000
	MaxMemoryMiB      = 1 << 20
	MaxSecrets        = 64
	MaxSecretNameLen  = 63
)

var (
	envKeyRe   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelKeyRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
	imageRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:@-]*$`)
	typeRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	secretRe   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)
)

// Validate checks every rule and returns the first broken one as a
// *FieldError (which wraps ErrInvalidSpec). Field names are the JSON/proto
// names, so users can find them in their input.
func (s *Spec) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Rule: fmt.Sprintf(format, args...)}
	}
	if len(s.Name) > MaxNameLen {
		return bad("name", "must be at most %d bytes, got %d", MaxNameLen, len(s.Name))
	}
	if !storable(s.Name) {
		return bad("name", "must be valid UTF-8 without NUL bytes")
	}
	switch {
	case len(s.Command) == 0 && s.Script == "":
		return bad("command", "is required (or give a script)")
	case len(s.Command) > 0 && s.Script != "":
		return bad("command", "give either a command or a script, not both")
	}
	if len(s.Command) > 0 {
		if s.Command[0] == "" {
			return bad("command[0]", "must not be empty")
		}
		if len(s.Command) > MaxArgs {
			return bad("command", "must have at most %d arguments, got %d", MaxArgs, len(s.Command))
		}
		n := 0
		for i, a := range s.Command {
			if strings.IndexByte(a, 0) >= 0 {
				return bad(fmt.Sprintf("command[%d]", i), "must not contain a NUL byte")
			}
			n += len(a)
		}
		if n > MaxCommandBytes {
			return bad("command", "must be at most %d bytes in total, got %d", MaxCommandBytes, n)
		}
	}
	if len(s.Script) > MaxScriptBytes {
		return bad("script", "must be at most %d bytes, got %d", MaxScriptBytes, len(s.Script))
	}
	if !storable(s.Script) {
		return bad("script", "must be valid UTF-8 without NUL bytes")
	}
	if s.Interpreter != "" && s.Script == "" {
		return bad("interpreter", "only applies to a script")
	}
	if strings.IndexByte(s.Interpreter, 0) >= 0 || len(s.Interpreter) > MaxPathLen {
		return bad("interpreter", "must be at most %d bytes, without NUL bytes", MaxPathLen)
	}
	if s.Image != "" && (len(s.Image) > MaxImageLen || !imageRe.MatchString(s.Image)) {
		return bad("image", "must be an image reference of at most %d characters [A-Za-z0-9._/:@-]", MaxImageLen)
	}
	if len(s.Env) > MaxEnvVars {
		return bad("env", "must have at most %d variables, got %d", MaxEnvVars, len(s.Env))
	}
	n := 0
	for _, k := range sortedKeys(s.Env) {
		v := s.Env[k]
		if !envKeyRe.MatchString(k) {
			return bad("env", "name %q must match [A-Za-z_][A-Za-z0-9_]*", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return bad("env."+k, "must not contain a NUL byte")
		}
		n += len(k) + len(v)
	}
	if n > MaxEnvBytes {
		return bad("env", "must be at most %d bytes in total, got %d", MaxEnvBytes, n)
	}
	if s.Workdir != "" && (!strings.HasPrefix(s.Workdir, "/") || strings.IndexByte(s.Workdir, 0) >= 0 || len(s.Workdir) > MaxPathLen) {
		return bad("workdir", "must be an absolute path of at most %d bytes", MaxPathLen)
	}
	if err := validateLabels("labels", s.Labels); err != nil {
		return err
	}
	if err := validateLabels("tags", s.Tags); err != nil {
		return err
	}
	if s.CPUMillis < 0 || s.CPUMillis > MaxCPUMillis {
		return bad("resources.cpu_millis", "must be between 0 and %d", MaxCPUMillis)
	}
	if s.MemoryMiB < 0 || s.MemoryMiB > MaxMemoryMiB {
		return bad("resources.memory_mib", "must be between 0 and %d", MaxMemoryMiB)
	}
	if s.Timeout < 0 || s.Timeout > MaxTimeout {
		return bad("timeout", "must be between 0 (none) and %s", MaxTimeout)
	}
	if s.Priority < -MaxPriority || s.Priority > MaxPriority {
		return bad("priority", "must be between %d and %d", -MaxPriority, MaxPriority)
	}
	if s.Type != "" && (len(s.Type) > MaxTypeLen || !typeRe.MatchString(s.Type)) {
		return bad("type", "must be at most %d characters [A-Za-z0-9._-]", MaxTypeLen)
	}
	if len(s.IdempotencyKey) > MaxIdempotencyLen || !storable(s.IdempotencyKey) {
		return bad("idempotency_key", "must be valid UTF-8 without NUL bytes, of at most %d bytes", MaxIdempotencyLen)
	}
	if err := s.validateSecrets(); err != nil {
		return err
	}
	return s.Retry.validate()
}

// ValidateSecretName checks a secret's name, naming field in its error:
// 1-63 characters [a-z0-9._-], starting and ending alphanumeric.
func ValidateSecretName(field, name string) error {
	if len(name) > MaxSecretNameLen || !secretRe.MatchString(name) {
		return &FieldError{Field: field, Rule: fmt.Sprintf("%q must be 1-%d characters [a-z0-9._-], starting and ending with a letter or digit", name, MaxSecretNameLen)}
	}
	return nil
}

// validateSecrets checks the secret references: valid names, and no two
// exposed as the same variable or as one of env's.
func (s *Spec) validateSecrets() error {
	if len(s.Secrets) > MaxSecrets {
		return &FieldError{Field: "secrets", Rule: fmt.Sprintf("must have at most %d entries, got %d", MaxSecrets, len(s.Secrets))}
	}
	seen := map[string]bool{}
	for i, r := range s.Secrets {
		field := fmt.Sprintf("secrets[%d]", i)
		if err := ValidateSecretName(field+".name", r.Name); err != nil {
			return err
		}
		if r.Env != "" && !envKeyRe.MatchString(r.Env) {
			return &FieldError{Field: field + ".env", Rule: fmt.Sprintf("%q must match [A-Za-z_][A-Za-z0-9_]*", r.Env)}
		}
		env := r.SecretEnv()
		if _, ok := s.Env[env]; ok || seen[env] {
			return &FieldError{Field: field + ".env", Rule: fmt.Sprintf("%s is set twice (by env or another secret)", env)}
		}
		seen[env] = true
	}
	return nil
}

func (r *RetryPolicy) validate() error {
	bad := func(field, format string, args ...any) error {
		return &FieldError{Field: "retry." + field, Rule: fmt.Sprintf(format, args...)}
	}
	if r.MaxAttempts < 0 || r.MaxAttempts > MaxAttemptsLimit {
		return bad("max_attempts", "must be between 0 (default) and %d", MaxAttemptsLimit)
	}
	if r.InitialBackoff < 0 || r.InitialBackoff > MaxBackoffLimit {
		return bad("initial_backoff", "must be between 0 (default) and %s", MaxBackoffLimit)
	}
	if r.MaxBackoff < 0 || r.MaxBackoff > MaxBackoffLimit {
		return bad("max_backoff", "must be between 0 (default) and %s", MaxBackoffLimit)
	}
	if r.MaxBackoff != 0 && r.MaxBackoff < r.InitialBackoff {
		return bad("max_backoff", "must not be below initial_backoff")
	}
	if r.Jitter < 0 || r.Jitter > 1 || math.IsNaN(r.Jitter) {
		return bad("jitter", "must be between 0 and 1")
	}
	if len(r.RetryableClasses) > MaxRetryableKinds {
		return bad("retryable_classes", "must have at most %d entries, got %d", MaxRetryableKinds, len(r.RetryableClasses))
	}
	if len(r.RetryableExitCodes) > MaxRetryableCodes {
		return bad("retryable_exit_codes", "must have at most %d entries, got %d", MaxRetryableCodes, len(r.RetryableExitCodes))
	}
	for _, c := range r.RetryableClasses {
		switch c {
		case FailureExitCode, FailureTimeout, FailureWorkerLost, FailureProvisioning:
		default:
			return bad("retryable_classes", "%q is not a retryable failure class", c)
		}
	}
	for _, c := range r.RetryableExitCodes {
		if c < 1 || c > 255 {
			return bad("retryable_exit_codes", "exit code %d must be between 1 and 255", c)
		}
	}
	return nil
}

// ValidateLabels checks labels by the rules of a spec's labels, naming
// field in its errors: what selects jobs by label (a webhook's filter)
// can only name labels a job may have.
func ValidateLabels(field string, m map[string]string) error { return validateLabels(field, m) }

func validateLabels(field string, m map[string]string) error {
	if len(m) > MaxLabels {
		return &FieldError{Field: field, Rule: fmt.Sprintf("must have at most %d entries, got %d", MaxLabels, len(m))}
	}
	for _, k := range sortedKeys(m) {
		if len(k) > MaxLabelKeyLen || !labelKeyRe.MatchString(k) {
			return &FieldError{Field: field, Rule: fmt.Sprintf("key %q must be 1-%d characters [A-Za-z0-9._/-], starting and ending alphanumeric", k, MaxLabelKeyLen)}
		}
		if v := m[k]; len(v) > MaxLabelValueLen || !storable(v) {
			return &FieldError{Field: field + "." + k, Rule: fmt.Sprintf("value must be valid UTF-8 without NUL bytes, of at most %d bytes", MaxLabelValueLen)}
		}
	}
	return nil
}

// storable says whether PostgreSQL can keep s as text or in JSON: valid
// UTF-8 without NUL bytes.
func storable(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Argv is the process argv the agent runs: the command, or the interpreter
// with the script as its -c argument.
func (s *Spec) Argv() []string { return Argv(s.Command, s.Script, s.Interpreter) }

// Argv builds a job's process argv from the fields of its spec that decide
// it, for callers holding the spec in another form (the agent receives a
// protobuf message): with a script, the interpreter (DefaultInterpreter
// when empty) with the script as its -c argument; otherwise command as it
// is, even when empty.
func Argv(command []string, script, interpreter string) []string {
	if script == "" {
		return command
	}
	if interpreter == "" {
		interpreter = DefaultInterpreter
	}
	return []string{interpreter, "-c", script}
}

// Retryable reports whether an attempt that failed with class and exit code
// may be retried under r. Validation and cancellation never are.
func (r *RetryPolicy) Retryable(class FailureClass, exitCode int) bool {
	switch class {
	case FailureInvalid, FailureCancelled, FailureNone:
		return false
	case FailureExitCode:
		return slices.Contains(r.RetryableExitCodes, int32(exitCode)) || slices.Contains(r.RetryableClasses, FailureExitCode)
	}
	if len(r.RetryableClasses) == 0 {
		return class == FailureWorkerLost || class == FailureProvisioning || class == FailureTimeout
	}
	return slices.Contains(r.RetryableClasses, class)
}

// Backoff returns the delay before attempt failed+1, after `failed`
// attempts have failed (failed >= 1): initial * 2^(failed-1), capped at max,
// then scaled by a uniform factor in [1-jitter, 1+jitter]. rnd returns a
// float in [0,1); nil uses math/rand/v2.
func (r *RetryPolicy) Backoff(failed int, rnd func() float64) time.Duration {
	initial, maxB, jitter := r.InitialBackoff, r.MaxBackoff, r.Jitter
	if initial == 0 {
		initial = DefaultInitialBackoff
	}
	if maxB == 0 {
		maxB = DefaultMaxBackoff
	}
	if jitter == 0 {
		jitter = DefaultJitter
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	d := initial
	for i := 1; i < failed && d < maxB; i++ {
		d *= 2
	}
	d = min(d, maxB)
	f := 1 + jitter*(2*rnd()-1)
	return time.Duration(float64(d) * f)
}

// MatchedBy reports whether a worker running image with labels can run a
// job that needs image and labels: it has every required label (equal
// value) and, when the job names an image, runs that image.
func MatchedBy(needImage string, needLabels map[string]string, image string, labels map[string]string) bool {
	if needImage != "" && image != needImage {
		return false
	}
	for k, v := range needLabels {
		if have, ok := labels[k]; !ok || have != v {
			return false
		}
	}
	return true
}

// Fits reports whether a job needing cpuMillis and memoryMiB fits a worker
// that allows up to maxCPU and maxMemory per job (0: no stated limit).
func Fits(cpuMillis, memoryMiB, maxCPU, maxMemory int64) bool {
	return (maxCPU == 0 || cpuMillis <= maxCPU) && (maxMemory == 0 || memoryMiB <= maxMemory)
}
