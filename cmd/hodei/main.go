// Command hodei is Hodei's single binary: the server, the worker agent,
// dev mode, benchmarks and the CLI.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/hodei-dev/hodei/internal/agent"
	"github.com/hodei-dev/hodei/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `hodei: a job execution platform

Platform:
  hodei dev [--listen ADDR] [--data-dir DIR]   server + embedded PostgreSQL + local workers
  hodei server [--listen ADDR]                 server on HODEI_DATABASE_URL
  hodei agent --server ADDR                    worker agent (token in HODEI_BOOTSTRAP_TOKEN)
  hodei bench startup|events|dispatch|throughput|logs|provision
                                               benchmarks (final line: result name=...)
  hodei version

Jobs (talk to --server with --token; defaults from $HODEI_SERVER, $HODEI_TOKEN,
then the client configuration $HODEI_CONFIG or ~/.config/hodei/config.json,
which hodei dev writes; server 127.0.0.1:7070):
  hodei run [flags] -- CMD [ARGS...]
  hodei job submit|get|list|cancel|retry|logs|watch|explain ...
  hodei events tail [--type T] [--aggregate KIND:ID]
  hodei provider list|get|enable|disable|set ...
  hodei webhook add|list|remove|deliveries|replay ...
  hodei jobtype set|list|get|delete ...
  hodei secret set|list|delete|rotate-key|audit ...
  hodei token create|list|revoke ...           API tokens and their scopes
`

// agentGuard is the command of the guardian an agent starts (guardCommand).
const agentGuard = "agent-guard"

func main() {
	os.Exit(run())
}

// gcPercent is used when GOGC is unset: with a small live heap, fewer collections cost less CPU.
const gcPercent = 300

func run() int {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "server":
		err = runServer(ctx, args)
	case "dev":
		err = runDev(ctx, args)
	case "agent":
		return runAgent(ctx, args)
	case agentGuard: // started by guardCommand only
		err = agent.RunGuardian(os.Stdin, os.Stdout)
	case agent.ShimCommand: // started by agents for jobs with secrets only
		err = agent.RunExecShim(os.Stdin, args)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hodei", err)
			return 127
		}
	case "testdb":
		err = runTestDB(ctx, args)
	case "bench":
		err = runBench(ctx, args)
	case "version":
		fmt.Println("hodei", version)
	case "run", "job", "events", "provider", "webhook", "jobtype", "secret", "token":
		return cli.Main(ctx, os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Env: os.Getenv, CreateTokenInDatabase: createTokenInDatabase})
	default:
		if !cli.IsHelp(cmd) {
			fmt.Fprintf(os.Stderr, "hodei: unknown command %q\n\n%s", cmd, usage)
			return 2
		}
		fmt.Print(usage)
	}
	return exitCode(err)
}
