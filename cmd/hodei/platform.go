package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hodei-dev/hodei/internal/agent"
	"github.com/hodei-dev/hodei/internal/cli"
	"github.com/hodei-dev/hodei/internal/pgembed"
	"github.com/hodei-dev/hodei/internal/platform"
	"github.com/hodei-dev/hodei/internal/tracing"
	"github.com/hodei-dev/hodei/internal/web"
)

// platformFlags registers the flags server and dev share.
func platformFlags(fs *flag.FlagSet, pc *platform.Config) {
	fs.IntVar(&pc.MaxWorkers, "max-workers", 4, "most workers the process provider runs (0: start none; agents connect on their own)")
	fs.DurationVar(&pc.IdleTimeout, "idle-timeout", time.Minute, "a process worker idle this long is stopped")
	fs.Var((*cli.KVFlag)(&pc.WorkerLabels), "worker-label", "label K=V of the process provider's workers (repeatable)")
	fs.DurationVar(&pc.EventRetention, "event-retention", 7*24*time.Hour, "delivered events older than this are pruned")
	fs.DurationVar(&pc.JobRetention, "job-retention", 30*24*time.Hour, "jobs that finished longer ago than this are deleted, with their attempts and logs")
	fs.DurationVar(&pc.Lease, "lease", 10*time.Second, "a worker silent this long loses its attempts (worker_lost)")
	fs.DurationVar(&pc.HealthInterval, "health-interval", 30*time.Second, "time between health checks of each provider")
	fs.IntVar(&pc.Docker.MaxWorkers, "docker-max-workers", 0, "most workers the Docker provider runs (0: no Docker provider)")
	fs.StringVar(&pc.Docker.Image, "docker-image", "hodei-worker:dev", "image of Docker workers whose job names no image")
	fs.StringVar(&pc.Docker.Host, "docker-host", "", "Docker engine address (default: DOCKER_HOST, else the local socket)")
	fs.StringVar(&pc.Docker.Binary, "docker-binary", "", "static hodei binary mounted into containers (default: this executable)")
	fs.Var((*cli.KVFlag)(&pc.Docker.Labels), "docker-worker-label", "label K=V of the Docker provider's workers (repeatable)")
	fs.IntVar(&pc.Kubernetes.MaxWorkers, "k8s-max-workers", 0, "most workers the Kubernetes provider runs as pods (0: no Kubernetes provider)")
	fs.StringVar(&pc.Kubernetes.Kubeconfig, "k8s-kubeconfig", "", "kubeconfig `file` of the cluster (default: in-cluster configuration, else KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&pc.Kubernetes.Namespace, "k8s-namespace", "", "namespace of the worker pods (default: the kubeconfig's, in a cluster the server's own)")
	fs.StringVar(&pc.Kubernetes.Server, "k8s-server", "", "address worker pods dial, e.g. a Service hodei.hodei.svc:7070 (default: --listen)")
	fs.StringVar(&pc.Kubernetes.Image, "k8s-image", "hodei-worker:dev", "image of worker pods whose job names no image")
	fs.StringVar(&pc.Kubernetes.AgentImage, "k8s-agent-image", "hodei:dev", "image whose /usr/local/bin/hodei the init container copies into worker pods")
	fs.StringVar(&pc.Kubernetes.ServiceAccount, "k8s-service-account", "", "service account of the worker pods (default: the namespace's default)")
	fs.StringVar(&pc.Kubernetes.PodOverrides, "k8s-pod-overrides", "", "YAML `file` of nodeSelector, tolerations and podTemplate applied to every worker pod")
	fs.Var((*cli.KVFlag)(&pc.Kubernetes.Labels), "k8s-worker-label", "label K=V of the Kubernetes provider's workers (repeatable)")
	fs.StringVar(&pc.JobTypeDefaults, "job-type-defaults", "", "YAML or JSON `file` mapping job types to retry policies, stored at start over the stored ones of the same names")
	fs.StringVar(&pc.SecretKeyFile, "secret-key-file", os.Getenv("HODEI_SECRET_KEY_FILE"), "`file` of the key-encryption keys of stored secrets, mode 0600, outside the database (empty: secrets off; hodei dev creates one in its data dir)")
	fs.DurationVar(&pc.DBWait, "db-wait", 0, "how long to wait at start for a database that refuses connections, retrying with backoff (0: no limit)")
	fs.StringVar(&pc.OTLPEndpoint, "otlp-endpoint", os.Getenv("HODEI_OTLP_ENDPOINT"), "OTLP/HTTP `URL` (http://collector:4318) to export one trace per job attempt to; the workers this server starts export theirs too (off when empty)")
	fs.StringVar(&pc.MetricsListen, "metrics-listen", "", "also serve /metrics on this `address`, without a token (the API port serves it to tokens with the metrics scope)")
}

func runServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	pc := platform.Config{AgentLog: os.Stderr}
	fs.StringVar(&pc.Listen, "listen", envOr("HODEI_LISTEN", "127.0.0.1:7070"), "address to serve on")
	platformFlags(fs, &pc)
	var tf tlsFlags
	tf.register(fs, &pc.TLS)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := tf.load("", false); err != nil {
		return err
	}
	if pc.DatabaseURL = os.Getenv("HODEI_DATABASE_URL"); pc.DatabaseURL == "" {
		return errors.New("HODEI_DATABASE_URL is not set (use `hodei dev` for an embedded PostgreSQL)")
	}
	pc.Ready = func(addr string) {
		fmt.Fprintf(os.Stderr, "\nDashboard: http://%s%s (sign in with an API token)\n\n", addr, web.Prefix)
	}
	return platform.Run(ctx, platform.NewLogger(os.Stderr), pc)
}

func runDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	pc := platform.Config{AgentLog: os.Stderr}
	fs.StringVar(&pc.Listen, "listen", "127.0.0.1:7070", "address to serve on")
	dataDir := fs.String("data-dir", "", "keep the embedded PostgreSQL (and the CA key, hodei-ca.key, unless --ca-key-file) here (default: a temporary directory)")
	platformFlags(fs, &pc)
	var tf tlsFlags
	tf.register(fs, &pc.TLS)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log := platform.NewLogger(os.Stderr)
	// Listen before starting PostgreSQL: a taken address fails at once.
	ln, err := platform.Listen(pc.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	pc.Listener = ln
	url := os.Getenv("HODEI_DATABASE_URL")
	if url == "" {
		start := time.Now()
		c, err := pgembed.Start(ctx, pgembed.Config{DataDir: *dataDir, Logger: log})
		if err != nil {
			return fmt.Errorf("embedded postgres: %w", err)
		}
		defer c.Stop(context.Background()) //nolint:errcheck
		if err := c.CreateDatabase(ctx, "hodei"); err != nil && !strings.Contains(err.Error(), "already exists") {
			return err
		}
		url = c.URL("hodei")
		log.Info("embedded postgres ready", "url", url, "took", time.Since(start).Round(time.Millisecond))
		if pc.SecretKeyFile == "" {
			// Beside the cluster, readable by this user only (not by the
			// postgres user the cluster runs as).
			pc.SecretKeyFile, pc.CreateSecretKey = filepath.Join(c.DataDir(), devSecretKeyFile), true
		}
	}
	keyFile := ""
	if *dataDir != "" {
		keyFile = filepath.Join(*dataDir, "hodei-ca.key")
	}
	if err := tf.load(keyFile, true); err != nil {
		return err
	}
	pc.DatabaseURL = url
	pc.StopAllWorkers = true
	var adminToken string
	pc.UILogins = web.NewLogins(0)
	pc.Prepare = devClientConfig(log, ln.Addr().String(), &adminToken)
	pc.Serving = func(addr string, bundle []byte) { writeClientConfig(log, addr, bundle) }
	pc.Ready = func(addr string) {
		fmt.Fprintf(os.Stderr, "\nHodei is running on %s. Try:\n  hodei run -- echo hello\n", addr)
		scheme := "https"
		if pc.TLS.InsecurePlaintext {
			scheme = "http"
		}
		printLogin(os.Stderr, pc.UILogins, scheme, addr, adminToken)
	}
	return platform.Run(ctx, log, pc)
}

// printLogin prints the one-time sign-in link of the dashboard, for the
// admin token of the client configuration.
func printLogin(w io.Writer, logins *web.Logins, scheme, addr, token string) {
	secret := logins.Issue(web.Principal{Name: "admin", Write: true, Admin: true, Token: token})
	fmt.Fprintf(w, "\nDashboard (one-time sign-in link, valid 24h):\n  %s://%s%slogin?t=%s\n\n", scheme, addr, web.Prefix, secret)
}

// devSecretKeyFile is the key file hodei dev creates in its data dir.
const devSecretKeyFile = "hodei-secret.key"

// autoPrefetch bounds --prefetch auto: deep enough that very short jobs batch their claims and results.
const autoPrefetch = 128

// prefetchFlag is --prefetch: a number of jobs, or auto.
type prefetchFlag struct {
	n        int
	adaptive bool
}

func (p *prefetchFlag) String() string {
	if p.adaptive {
		return "auto"
	}
	return strconv.Itoa(p.n)
}

func (p *prefetchFlag) Set(v string) error {
	if v == "auto" {
		*p = prefetchFlag{n: autoPrefetch, adaptive: true}
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is neither auto nor a number of jobs (0 or more)", v)
	}
	*p = prefetchFlag{n: n}
	return nil
}

func runAgent(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	servers := fs.String("server", envOr("HODEI_SERVER", "127.0.0.1:7070"), "server addresses, comma separated")
	slots := fs.Int("slots", 1, "concurrent jobs")
	prefetch := prefetchFlag{adaptive: true, n: autoPrefetch}
	fs.Var(&prefetch, "prefetch", "jobs accepted beyond --slots, started as slots free (short jobs: no idle slot between jobs); auto: as many as this worker finished in the last 100 ms, at most 128")
	noop := fs.Bool("noop-exec", false, "BENCHMARK ONLY: report success without running the process")
	drain := fs.Duration("drain-timeout", 30*time.Second, "on SIGTERM, how long running jobs may finish before they are cancelled")
	grace := fs.Duration("grace", 10*time.Second, "SIGTERM to SIGKILL grace for cancelled jobs")
	hard := fs.Duration("hard-timeout", 0, "on SIGTERM, when everything is killed and the agent exits 1 (default drain-timeout + grace + 10s)")
	maxJobs := fs.Int("max-jobs", 0, "retire (exit 0) after running this many jobs; 0: no limit (ephemeral workers use 1)")
	cpu := fs.Int64("cpu-millis", 0, "the most CPU one job may use here, in millicores (0: not stated)")
	mem := fs.Int64("memory-mib", 0, "the most memory one job may use here, in MiB (0: not stated)")
	otlp := fs.String("otlp-endpoint", os.Getenv("HODEI_OTLP_ENDPOINT"), "OTLP/HTTP `URL` to export this agent's spans of traced attempts to (off when empty)")
	metricsAddr := fs.String("metrics-listen", "", "serve this agent's counters on http://ADDR/metrics (the server exports them too, from heartbeats); off when empty")
	connectTimeout := fs.Duration("connect-timeout", 10*time.Second, "how long to wait for a server's answer to enrollment or a new stream before trying the next server")
	var labels cli.KVFlag
	fs.Var(&labels, "label", "worker label K=V (repeatable)")
	caFile := fs.String("ca-file", "", "PEM `file` of the CAs the server's certificate chains to (default: the bundle in HODEI_CA, which providers set, else the file HODEI_CA_FILE; none: cleartext, for a server run with --insecure-plaintext)")
	if err := parseFlags(fs, args); err != nil {
		return exitCode(err)
	}
	log := platform.NewLogger(os.Stderr)
	guard, err := guardCommand()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hodei agent: the guardian of its jobs:", err)
		return 1
	}
	tracer, err := tracing.New(ctx, *otlp, "hodei-agent")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hodei agent: --otlp-endpoint:", err)
		return 2
	}
	defer tracer.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // best effort at exit
	var shim []string
	if len(guard) > 0 {
		shim = []string{guard[0], agent.ShimCommand}
	}
	batch, _ := strconv.Atoi(os.Getenv("HODEI_LOG_BATCH_SIZE"))
	flush, _ := time.ParseDuration(os.Getenv("HODEI_LOG_FLUSH_INTERVAL"))
	ca, err := agentCA(*caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hodei:", err)
		return 2
	}
	a, err := agent.New(agent.Config{Servers: strings.Split(*servers, ","), BootstrapToken: os.Getenv("HODEI_BOOTSTRAP_TOKEN"), CA: ca,
		Labels: labels, Slots: *slots, BatchLines: batch, FlushInterval: flush, Version: version, Logger: log, NoopExec: *noop,
		DrainTimeout: *drain, Grace: *grace, HardTimeout: *hard, MaxJobs: *maxJobs, CPUMillis: *cpu, MemoryMiB: *mem, Prefetch: prefetch.n, AdaptivePrefetch: prefetch.adaptive, GuardCommand: guard,
		Tracer:         tracer,
		ConnectTimeout: *connectTimeout, ExecShim: shim})
	if err != nil {
		fmt.Fprintln(os.Stderr, "hodei:", err)
		return 2
	}
	if *metricsAddr != "" {
		stop, err := listenAgentMetrics(log, *metricsAddr, a)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hodei agent: --metrics-listen:", err)
			return 2
		}
		defer stop()
	}
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hodei agent:", err)
		return 1
	}
	return 0
}

// agentCA is the trust bundle of an agent: --ca-file, else HODEI_CA,
// else the file HODEI_CA_FILE.
func agentCA(file string) ([]byte, error) {
	if b := os.Getenv("HODEI_CA"); file == "" && b != "" {
		return []byte(b), nil
	}
	if file == "" {
		file = os.Getenv("HODEI_CA_FILE")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		return b, nil
	}
	return nil, nil
}

// guardCommand runs this executable as the guardian of an agent's jobs,
// which kills them when the agent dies.
func guardCommand() ([]string, error) {
	exe, err := selfExe()
	if err != nil {
		return nil, err
	}
	return []string{exe, agentGuard}, nil
}

// selfExe is a path that runs this very program. On Linux it is
// /proc/self/exe, which names the running binary even after its file was
// replaced or removed (an upgrade, a rebuild): the path of the file would
// then start another version, or nothing, and an agent whose guardian
// could not start would leave its jobs running if it were killed.
func selfExe() (string, error) {
	if runtime.GOOS == "linux" {
		return "/proc/self/exe", nil
	}
	return os.Executable()
}

// writeClientConfig points the CLI's configuration file at this server
// and its CA, keeping the rest of the file.
func writeClientConfig(log *slog.Logger, addr string, bundle []byte) {
	path := cli.ConfigPath(os.Getenv)
	if path == "" {
		return
	}
	c, err := cli.LoadConfig(path)
	if err != nil {
		log.Warn("client configuration not written", "file", path, "err", err)
		return
	}
	c.Server, c.CA = addr, string(bundle)
	if bundle == nil {
		c.Server = "http://" + addr
	}
	if err := cli.WriteConfig(path, c); err != nil {
		log.Warn("client configuration not written", "file", path, "err", err)
		return
	}
	log.Info("client configuration written", "file", path)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// runTestDB runs a throwaway PostgreSQL for `make test` and writes its URL
// to a file once it is ready; it stops on SIGINT/SIGTERM.
func runTestDB(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("testdb", flag.ContinueOnError)
	urlFile := fs.String("url-file", "", "write the admin URL here when ready")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := pgembed.Start(ctx, pgembed.Config{Settings: pgembed.ThrowawaySettings(), Logger: platform.NewLogger(os.Stderr)})
	if err != nil {
		return err
	}
	defer c.Stop(context.Background()) //nolint:errcheck
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile+".tmp", []byte(c.URL("postgres")), 0o600); err != nil {
			return err
		}
		if err := os.Rename(*urlFile+".tmp", *urlFile); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}
