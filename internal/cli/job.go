package cli

import (
	"context"
	"flag"
	"fmt"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

const jobUsage = "usage: hodei job submit|get|list|cancel|retry|logs|watch|explain ..."

func (e *env) job(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("job: missing subcommand\n%s", jobUsage)
	}
	sub, args := args[0], args[1:]
	if IsHelp(sub) {
		fmt.Fprintln(e.Out, jobUsage)
		return errHelpShown
	}
	switch sub {
	case "submit":
		return e.jobSubmit(ctx, args)
	case "get":
		return e.jobGet(ctx, args)
	case "list":
		return e.jobList(ctx, args)
	case "cancel":
		return e.jobCancel(ctx, args)
	case "retry":
		return e.jobRetry(ctx, args)
	case "logs":
		return e.jobLogs(ctx, args)
	case "watch":
		return e.jobWatch(ctx, args)
	case "explain":
		return e.jobExplain(ctx, args)
	}
	return usagef("job: unknown subcommand %q\n%s", sub, jobUsage)
}

// jobCommand is the common shape of "job VERB ID [-o FORMAT]".
type jobCommand struct {
	id     string
	format string
	c      *clients
}

// parseIDCommand parses "job <name> ID" with --server, -o (when formats
// are given) and whatever extra registers.
func (e *env) parseIDCommand(name string, args []string, extra func(*flag.FlagSet), formats ...string) (*jobCommand, error) {
	fs := e.flagSet("job " + name)
	server := e.serverFlag(fs)
	var format *formatFlag
	if len(formats) > 0 {
		format = outputFlag(fs, formats...)
	}
	if extra != nil {
		extra(fs)
	}
	pos, err := e.parse(fs, "ID [flags]", args, true)
	if err != nil {
		return nil, err
	}
	if len(pos) != 1 {
		return nil, usagef("job %s: want exactly one job ID, got %d arguments", name, len(pos))
	}
	addr, err := serverAddr(*server)
	if err != nil {
		return nil, usagef("%v", err)
	}
	jc := &jobCommand{id: pos[0], c: e.dial(addr)}
	if format != nil {
		jc.format = format.value
	}
	return jc, nil
}

func (e *env) jobSubmit(ctx context.Context, args []string) error {
	addr, spec, err := e.parseJobArgs("job submit", "[job flags] [--] CMD [ARGS...] | -f FILE [job flags]", args, true)
	if err != nil {
		return err
	}
	c := e.dial(addr)
	defer c.close()
	resp, err := c.jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
	if err != nil {
		return err
	}
	fmt.Fprintln(e.Out, resp.Msg.GetJob().GetId())
	return nil
}

func (e *env) jobGet(ctx context.Context, args []string) error {
	jc, err := e.parseIDCommand("get", args, nil, formatTable, formatJSON, formatYAML)
	if err != nil {
		return err
	}
	defer jc.c.close()
	resp, err := jc.c.jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: jc.id}))
	if err != nil {
		return err
	}
	return e.printJob(jc.format, resp.Msg.GetJob())
}

func (e *env) jobCancel(ctx context.Context, args []string) error {
	jc, err := e.parseIDCommand("cancel", args, nil, formatTable, formatJSON, formatYAML)
	if err != nil {
		return err
	}
	defer jc.c.close()
	resp, err := jc.c.jobs.CancelJob(ctx, connect.NewRequest(&hodeiv1.CancelJobRequest{Id: jc.id}))
	if err != nil {
		return err
	}
	return e.printJob(jc.format, resp.Msg.GetJob())
}

func (e *env) jobRetry(ctx context.Context, args []string) error {
	jc, err := e.parseIDCommand("retry", args, nil, formatTable, formatJSON, formatYAML)
	if err != nil {
		return err
	}
	defer jc.c.close()
	resp, err := jc.c.jobs.RetryJob(ctx, connect.NewRequest(&hodeiv1.RetryJobRequest{Id: jc.id}))
	if err != nil {
		return err
	}
	return e.printJob(jc.format, resp.Msg.GetJob())
}

func (e *env) jobExplain(ctx context.Context, args []string) error {
	jc, err := e.parseIDCommand("explain", args, nil, formatTable, formatJSON, formatYAML)
	if err != nil {
		return err
	}
	defer jc.c.close()
	resp, err := jc.c.jobs.ExplainJob(ctx, connect.NewRequest(&hodeiv1.ExplainJobRequest{Id: jc.id}))
	if err != nil {
		return err
	}
	if jc.format != formatTable {
		return e.printMessage(jc.format, resp.Msg)
	}
	for _, r := range resp.Msg.GetReasons() {
		fmt.Fprintln(e.Out, r)
	}
	return nil
}

func (e *env) jobLogs(ctx context.Context, args []string) error {
	var follow bool
	var attempt int32Flag
	jc, err := e.parseIDCommand("logs", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&follow, "f", false, "follow: print new output until the job is final")
		fs.Var(&attempt, "attempt", "only this attempt `number` (0: all)")
	})
	if err != nil {
		return err
	}
	defer jc.c.close()
	if attempt < 0 {
		return usagef("job logs: --attempt must not be negative")
	}
	_, err = e.streamLogs(ctx, jc.c, &hodeiv1.GetJobLogsRequest{Id: jc.id, Follow: follow, Attempt: int32(attempt)})
	return err
}

func (e *env) jobWatch(ctx context.Context, args []string) error {
	jc, err := e.parseIDCommand("watch", args, nil, formatTable, formatJSON, formatYAML)
	if err != nil {
		return err
	}
	defer jc.c.close()
	rc := e.reconnector("watch")
	var last *hodeiv1.Job
	for {
		opened := e.now()
		stream, err := jc.c.jobs.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: jc.id}))
		if err == nil {
			for stream.Receive() {
				j := stream.Msg().GetJob()
				if last != nil && j.GetState() == last.GetState() && j.GetAttempt() == last.GetAttempt() {
					rc.alive()
					continue
				}
				rc.progress()
				last = j
				if err := e.printWatch(jc.format, j); err != nil {
					stream.Close()
					return err
				}
			}
			err = stream.Err()
			stream.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if last != nil && isFinal(last.GetState()) {
			return nil
		}
		if err := rc.retry(ctx, opened, err); err != nil {
			return err
		}
	}
}

func (e *env) jobList(ctx context.Context, args []string) error {
	fs := e.flagSet("job list")
	server := e.serverFlag(fs)
	format := outputFlag(fs, formatTable, formatJSON, formatYAML)
	var states statesFlag
	var labels KVFlag
	var limit int32Flag
	fs.Var(&states, "state", "only jobs in this `state`: queued, running, failed, ... (repeatable)")
	fs.Var(&labels, "label", "only jobs requiring label `K=V` (repeatable)")
	typ := fs.String("type", "", "only jobs of this `type`")
	fs.Var(&limit, "limit", "jobs per page: `N` (0: server default, 100)")
	text := fs.String("text", "", "only jobs whose name, command or script contains `TEXT`, in any case")
	all := fs.Bool("all", false, "fetch every page")
	pos, err := e.parse(fs, "[flags]", args, true)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("job list: unexpected argument %q", pos[0])
	}
	if limit < 0 {
		return usagef("job list: --limit must not be negative")
	}
	addr, err := serverAddr(*server)
	if err != nil {
		return usagef("%v", err)
	}
	c := e.dial(addr)
	defer c.close()

	// A text search examines a bounded number of jobs per call and may
	// answer a short page with a token to go on: the page is filled from
	// as many calls as it takes.
	want := int(limit)
	if want == 0 {
		want = 100
	}
	req := &hodeiv1.ListJobsRequest{States: states, Labels: labels, Type: *typ, Text: *text, PageSize: int32(limit)}
	if *text != "" {
		req.PageSize = int32(want)
	}
	out := &hodeiv1.ListJobsResponse{}
	seen := map[string]bool{}
	for {
		resp, err := c.jobs.ListJobs(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		out.Jobs = append(out.Jobs, resp.Msg.GetJobs()...)
		out.NextPageToken = resp.Msg.GetNextPageToken()
		out.SearchedTo = resp.Msg.GetSearchedTo()
		next := resp.Msg.GetNextPageToken()
		short := resp.Msg.GetSearchedTo() != nil && len(out.Jobs) < want
		if next == "" || !*all && !short {
			break
		}
		if seen[next] {
			return fmt.Errorf("job list: the server returned page token %q twice", next)
		}
		seen[next] = true
		req.PageToken = next
		if short && !*all {
			req.PageSize = int32(want - len(out.Jobs))
		}
	}
	if format.value != formatTable {
		return e.printMessage(format.value, out)
	}
	e.printJobTable(out.GetJobs())
	if out.GetNextPageToken() != "" {
		fmt.Fprintln(e.Err, "hodei: more jobs; use --all or a larger --limit")
	}
	return nil
}
