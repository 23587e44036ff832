package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// IO bundles the process's streams so tests can capture them.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
	// Env looks up an environment variable; nil means none is set.
	Env func(string) string
	// CreateTokenInDatabase, when set, creates an API token directly in
	// the database (token create --database: the first admin token).
	CreateTokenInDatabase func(ctx context.Context, name string, scopes []string, ttl time.Duration) (*hodeiv1.CreateTokenResponse, error)
}

// Exit codes returned by Main.
const (
	ExitOK    = 0 // success
	ExitError = 1 // a command failed (server error, not found, ...)
	ExitUsage = 2 // bad command line: unknown command, bad flag value, missing argument

	// run only: besides the job's own exit code.
	ExitTimedOut  = 124 // the job timed out
	ExitPlatform  = 125 // worker lost, provisioning failed, invalid spec, server unreachable or error
	ExitCancelled = 130 // the job was cancelled, or the command was interrupted
)

// DefaultServer is the server address used when neither --server nor
// HODEI_SERVER is given.
const DefaultServer = "127.0.0.1:7070"

// Usage lists every command.
const Usage = `usage: hodei <command> [flags] [args]

Commands:
  run [job flags] [--] CMD [ARGS...]   submit a job, stream its output, exit with its exit code
  run [job flags] --script FILE
  job submit [job flags] [--] CMD [ARGS...]
  job submit -f FILE [job flags]       submit a JobSpec (YAML or JSON, proto JSON names; - is stdin);
                                       prints the job id; flags override fields of the file
  job get ID                           show a job and its attempts
  job list [--state S]... [--label K=V]... [--type T] [--text TEXT] [--limit N] [--all]
                                       list jobs, newest first (--limit: page size, --all: every page,
                                       --text: in the name, command or script, any case)
  job cancel ID                        cancel a job that is not final
  job retry ID                         start a new attempt of a final job
  job logs ID [-f] [--attempt N]       print a job's output (-f: follow until the job is final)
  job watch ID                         print each state change until the job is final
  job explain ID                       say why a job is where it is
  events tail [--type T]... [--aggregate KIND[:ID]] [--after ID]
                                       print events as they happen
  provider list                        list providers and their health
  webhook add NAME URL --type T... [--label K=V]... [--secret-file F] [--max-attempts N]
                                       send events of these types to URL, signed (docs/webhooks.md)
  webhook list | remove NAME           list webhooks; remove one
  webhook deliveries NAME              its failed deliveries (event, type, attempts, last error)
  webhook replay NAME (--id ID... | --all)
                                       send failed deliveries again
  jobtype set TYPE [--max-attempts N] [--retry-exit-code C]... [--backoff-initial D] [--backoff-max D]
                                       retry defaults of the jobs of TYPE (docs/jobs.md)
  jobtype list | get TYPE | delete TYPE
                                       list job types; show one; delete one
  secret set NAME [--from-file F]      store a value read from stdin (or F), encrypted; never from argv
  secret list | delete NAME            names, versions, who changed them when (never values); delete one
  secret rotate-key                    re-seal every value under a new key-encryption key
  secret audit NAME [--limit N]        every read and change of a secret
  token create NAME --scope S... [--ttl D] [--database]
                                       create an API token and print its secret once; scopes jobs:read,
                                       jobs:write, secrets:use, metrics, admin (--database: in HODEI_DATABASE_URL,
                                       no server needed; the first admin token)
  token list | revoke NAME|ID          list API tokens (never their secrets); revoke one

Flags on every command:
  --server ADDR   host:port or https://host:port (TLS), http://host:port (a server run with
                  --insecure-plaintext) (default $HODEI_SERVER, else the configuration file's,
                  else 127.0.0.1:7070)
  --ca-file F     PEM CAs the server's certificate chains to (default $HODEI_CA_FILE, else the
                  configuration file's ca, else the system's roots)
  --token TOKEN   API token sent with every call (default $HODEI_TOKEN, else the configuration
                  file's: $HODEI_CONFIG, else ~/.config/hodei/config.json, which hodei dev writes)
  --connect-timeout D
                  how long the server may take to answer (default $HODEI_CONNECT_TIMEOUT, else 10s);
                  streams then follow without a limit
  -o FORMAT       table (default), json or yaml; on get, list, cancel, retry, watch, explain,
                  provider list, webhook add|list|deliveries|replay, jobtype set|list|get,
                  secret set|list|rotate-key|audit;
                  token create|list|revoke;
                  table or json on events tail; ignored by job submit

Job flags (run, job submit):
  --name NAME              --image IMAGE             --type TYPE
  --env K=V (repeatable)   --label K=V (repeatable)  --tag K=V (repeatable)
  --cpu Q                  millicores: 500m, 0.5, 2
  --memory Q               MiB: 256, 512Mi, 1Gi
  --timeout D              Go duration: 30s, 5m, 1h30m
  --max-attempts N         --retry-exit-code N (repeatable)
                           without --max-attempts (or a job type's) a job has 3 attempts,
                           for platform failures only (worker lost, provisioning)
  --priority N             --idempotency-key KEY     --workdir DIR
  --secret NAME            expose stored secret NAME as SECRET_NAME (upper case, '-' and '.' as '_')
  --secret ENV=NAME        expose it as ENV (repeatable; values never enter the spec)
  --script FILE            run FILE with /bin/sh instead of a command
  --merge-output           stderr into stdout's pipe: exact write order, all lines stdout

Exit codes:
  0 success, 1 command failed, 2 usage error.
  run: the job's exit code; 124 timed out; 125 platform failure (worker lost,
  provisioning, invalid spec, server unreachable or rejecting the job);
  130 cancelled or interrupted.
`

// env is what every command gets: the process streams plus the knobs
// tests may turn.
type env struct {
	IO
	now func() time.Time
	loc *time.Location
	// readFile reads --script and -f files.
	readFile func(string) ([]byte, error)
	// Reconnect policy of following streams.
	retryMin, retryMax time.Duration
	// giveUp is how long a stream may fail without any progress.
	giveUp time.Duration
	// submitGrace is how long an interrupted run still waits for its
	// SubmitJob answer, so it can cancel the job it created.
	submitGrace time.Duration
	// cancelTimeout bounds the CancelJob sent after an interrupt.
	cancelTimeout time.Duration
	// connectTimeout is --connect-timeout; envErr a bad value of the
	// environment a flag defaults from, reported as a usage error.
	connectTimeout time.Duration
	envErr         error
	// settings is the client configuration with the environment over it
	// (clientSettings); token is --token, defaulting from it.
	settings *ClientConfig
	token    string
	// caFile is --ca-file.
	caFile *string
}

func newEnv(streams IO) *env {
	if streams.In == nil {
		streams.In = strings.NewReader("")
	}
	if streams.Out == nil {
		streams.Out = io.Discard
	}
	if streams.Err == nil {
		streams.Err = io.Discard
	}
	if streams.Env == nil {
		streams.Env = func(string) string { return "" }
	}
	return &env{
		IO:             streams,
		now:            time.Now,
		loc:            time.Local,
		readFile:       readFileOS,
		retryMin:       250 * time.Millisecond,
		retryMax:       5 * time.Second,
		giveUp:         2 * time.Minute,
		submitGrace:    5 * time.Second,
		cancelTimeout:  10 * time.Second,
		connectTimeout: DefaultConnectTimeout,
	}
}

// Main runs a CLI subcommand: args[0] is the subcommand word ("run",
// "job", "events", "provider", "webhook") and the rest its arguments. It
// returns the process exit code.
func Main(ctx context.Context, args []string, streams IO) int {
	return newEnv(streams).main(ctx, args)
}

func (e *env) main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.Err, Usage)
		return ExitUsage
	}
	var err error
	switch args[0] {
	case "run":
		err = e.run(ctx, args[1:])
	case "job":
		err = e.job(ctx, args[1:])
	case "events":
		err = e.events(ctx, args[1:])
	case "provider":
		err = e.provider(ctx, args[1:])
	case "webhook":
		err = e.webhook(ctx, args[1:])
	case "jobtype":
		err = e.jobType(ctx, args[1:])
	case "secret":
		err = e.secret(ctx, args[1:])
	case "token":
		err = e.tokenCmd(ctx, args[1:])
	default:
		if IsHelp(args[0]) {
			fmt.Fprint(e.Out, Usage)
			return ExitOK
		}
		err = usagef("unknown command %q", args[0])
	}
	return e.exit(ctx, err)
}

// usageError is a bad command line (exit 2).
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError ends a command with a given exit code. err, when set, is
// printed first.
type exitError struct {
	code int
	err  error
}

func (x *exitError) Error() string {
	if x.err == nil {
		return fmt.Sprintf("exit %d", x.code)
	}
	return x.err.Error()
}

// IsHelp reports whether arg asks for help; the hodei binary asks it too.
func IsHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

// errHelpShown ends a command after -h printed its help (exit 0).
var errHelpShown = errors.New("help shown")

// exit prints err and maps it to an exit code.
func (e *env) exit(ctx context.Context, err error) int {
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, errHelpShown) {
		return ExitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(e.Err, "hodei: %s\n", ue.msg)
		fmt.Fprintln(e.Err, "run 'hodei help' for usage")
		return ExitUsage
	}
	var xe *exitError
	if errors.As(err, &xe) {
		if xe.err != nil {
			e.printErr(xe.err)
		}
		return xe.code
	}
	if ctx.Err() != nil {
		// Interrupted: the error is only the echo of the cancellation.
		return ExitCancelled
	}
	e.printErr(err)
	return ExitError
}

// printErr prints "hodei: <message>"; errors from the server as
// "code: message".
func (e *env) printErr(err error) {
	fmt.Fprintf(e.Err, "hodei: %s\n", errorText(err))
}

func errorText(err error) string {
	var na *noAnswerError
	if errors.As(err, &na) {
		return na.Error()
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg := ce.Message()
		if ce.Code() == connect.CodeUnauthenticated {
			msg += " (the token comes from --token, HODEI_TOKEN or the client configuration file, HODEI_CONFIG or ~/.config/hodei/config.json; `hodei dev` writes one)"
		}
		if msg == "" {
			return ce.Code().String()
		}
		return ce.Code().String() + ": " + msg
	}
	return err.Error()
}

// flagSet makes the FlagSet of one command; name is the command words
// ("job get"). Errors are printed by parse, not by the flag package.
func (e *env) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses args with fs and turns flag errors into usage errors;
// -h prints the command's help to Out. synopsis follows the command name
// in messages. With interspersed, flags may follow positional arguments
// (job get ID -o json); "--" ends flags either way.
func (e *env) parse(fs *flag.FlagSet, synopsis string, args []string, interspersed bool) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(e.Out, "usage: hodei %s %s\n\nFlags:\n", fs.Name(), synopsis)
				fs.SetOutput(e.Out)
				fs.PrintDefaults()
				return nil, errHelpShown
			}
			return nil, usagef("%s: %v\nusage: hodei %s %s", fs.Name(), err, fs.Name(), synopsis)
		}
		if e.envErr != nil {
			return nil, usagef("%v", e.envErr)
		}
		rest := fs.Args()
		if !interspersed || len(rest) == 0 {
			return append(pos, rest...), nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
