package cli

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

func readFileOS(name string) ([]byte, error) { return os.ReadFile(name) }

// serverFlag registers --server and --token with their defaults from
// the environment (HODEI_SERVER, HODEI_TOKEN) over the client
// configuration file, and --connect-timeout.
func (e *env) serverFlag(fs *flag.FlagSet) *string {
	c := e.clientSettings()
	def := c.Server
	if def == "" {
		def = DefaultServer
	}
	e.connectTimeoutFlag(fs)
	// No default shown: help output must not print a secret.
	fs.StringVar(&e.token, "token", "", "API `token` sent with every call (default: env HODEI_TOKEN, else the configuration file's)")
	return fs.String("server", def, "server `address`: host:port or http://host:port (env HODEI_SERVER, else the configuration file's)")
}

// serverAddr normalizes a --server value to host:port.
func serverAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "http://"); ok {
		s = rest
	} else if strings.Contains(s, "://") {
		return "", fmt.Errorf("--server %q: only http:// (cleartext HTTP/2) is supported", s)
	}
	s = strings.TrimSuffix(s, "/")
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" || strings.Contains(s, "/") {
		return "", fmt.Errorf("--server %q: want host:port or http://host:port", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("--server %q: bad port %q", s, port)
	}
	return s, nil
}

// Output formats.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

// formatFlag is -o: one of the allowed formats.
type formatFlag struct {
	value   string
	allowed []string
}

func (f *formatFlag) String() string {
	if f == nil {
		return ""
	}
	return f.value
}

func (f *formatFlag) Set(s string) error {
	if !slices.Contains(f.allowed, s) {
		return fmt.Errorf("want one of %s", strings.Join(f.allowed, ", "))
	}
	f.value = s
	return nil
}

// outputFlag registers -o with the given formats; the first is the default.
func outputFlag(fs *flag.FlagSet, formats ...string) *formatFlag {
	f := &formatFlag{value: formats[0], allowed: formats}
	fs.Var(f, "o", "output `format`: "+strings.Join(formats, ", "))
	return f
}

// KVFlag is a repeatable KEY=VALUE flag; a later key wins. The hodei
// binary's server and agent labels use it too.
type KVFlag map[string]string

func (k *KVFlag) String() string {
	if k == nil || *k == nil {
		return ""
	}
	var parts []string
	for _, key := range slices.Sorted(maps.Keys(*k)) {
		parts = append(parts, key+"="+(*k)[key])
	}
	return strings.Join(parts, ",")
}

func (k *KVFlag) Set(s string) error {
	key, value, ok := strings.Cut(s, "=")
	if !ok || key == "" {
		return errors.New("want KEY=VALUE")
	}
	if *k == nil {
		*k = map[string]string{}
	}
	(*k)[key] = value
	return nil
}

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string {
	if s == nil {
		return ""
	}
	return strings.Join(*s, ",")
}

func (s *stringsFlag) Set(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	*s = append(*s, v)
	return nil
}

// int32Flag is an int32 flag.
type int32Flag int32

func (i *int32Flag) String() string {
	if i == nil {
		return "0"
	}
	return strconv.Itoa(int(*i))
}

func (i *int32Flag) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	if err != nil {
		return errors.New("want a 32-bit integer")
	}
	*i = int32Flag(n)
	return nil
}

// int32sFlag is a repeatable int32 flag.
type int32sFlag []int32

func (l *int32sFlag) String() string {
	if l == nil {
		return ""
	}
	var parts []string
	for _, n := range *l {
		parts = append(parts, strconv.Itoa(int(n)))
	}
	return strings.Join(parts, ",")
}

func (l *int32sFlag) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	if err != nil {
		return errors.New("want an integer")
	}
	*l = append(*l, int32(n))
	return nil
}

// durationFlag is a non-negative Go duration.
type durationFlag time.Duration

func (d *durationFlag) String() string {
	if d == nil || *d == 0 {
		return ""
	}
	return time.Duration(*d).String()
}

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want a duration like 30s, 5m or 1h30m")
	}
	if v < 0 {
		return errors.New("must not be negative")
	}
	*d = durationFlag(v)
	return nil
}

// cpuFlag is a CPU quantity in millicores.
type cpuFlag int64

func (c *cpuFlag) String() string {
	if c == nil || *c == 0 {
		return ""
	}
	return strconv.FormatInt(int64(*c), 10) + "m"
}

func (c *cpuFlag) Set(s string) error {
	n, err := ParseQuantityCPU(s)
	if err != nil {
		return err
	}
	*c = cpuFlag(n)
	return nil
}

// memoryFlag is a memory quantity in MiB.
type memoryFlag int64

func (m *memoryFlag) String() string {
	if m == nil || *m == 0 {
		return ""
	}
	return strconv.FormatInt(int64(*m), 10) + "Mi"
}

func (m *memoryFlag) Set(s string) error {
	n, err := ParseQuantityMemory(s)
	if err != nil {
		return err
	}
	*m = memoryFlag(n)
	return nil
}

// statesFlag is a repeatable job state: "queued" or "JOB_STATE_QUEUED".
type statesFlag []hodeiv1.JobState

func (s *statesFlag) String() string {
	if s == nil {
		return ""
	}
	var parts []string
	for _, st := range *s {
		parts = append(parts, stateName(st))
	}
	return strings.Join(parts, ",")
}

func (s *statesFlag) Set(v string) error {
	st, err := parseState(v)
	if err != nil {
		return err
	}
	*s = append(*s, st)
	return nil
}

// parseState accepts a state as "queued", "QUEUED" or "JOB_STATE_QUEUED".
func parseState(v string) (hodeiv1.JobState, error) {
	name := strings.ToUpper(strings.TrimSpace(v))
	name = strings.ReplaceAll(name, "-", "_")
	if !strings.HasPrefix(name, "JOB_STATE_") {
		name = "JOB_STATE_" + name
	}
	n, ok := hodeiv1.JobState_value[name]
	if !ok || n == int32(hodeiv1.JobState_JOB_STATE_UNSPECIFIED) {
		var names []string
		for i := int32(1); ; i++ {
			st, ok := hodeiv1.JobState_name[i]
			if !ok {
				break
			}
			names = append(names, strings.ToLower(strings.TrimPrefix(st, "JOB_STATE_")))
		}
		return 0, fmt.Errorf("unknown state %q (want one of %s)", v, strings.Join(names, ", "))
	}
	return hodeiv1.JobState(n), nil
}

// int64Flag is a non-negative int64 flag.
type int64Flag int64

func (i *int64Flag) String() string {
	if i == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*i), 10)
}

func (i *int64Flag) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return errors.New("want a non-negative integer")
	}
	*i = int64Flag(n)
	return nil
}
