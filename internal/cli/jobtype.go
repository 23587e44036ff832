package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

const jobTypeUsage = `usage: hodei jobtype set TYPE [--max-attempts N] [--retry-exit-code C]... [--backoff-initial D] [--backoff-max D]
       hodei jobtype list
       hodei jobtype get TYPE
       hodei jobtype delete TYPE`

// subCommand is one parsed "GROUP VERB ...": its positional arguments,
// output format and clients.
type subCommand struct {
	args   []string
	format string
	c      *clients
}

// parseSub parses "group <verb>" with --server, -o and what extra
// registers, wanting synopsis's positional arguments (want of them).
func (e *env) parseSub(group, usage, verb, synopsis string, want int, args []string, extra func(fs *flag.FlagSet)) (*subCommand, error) {
	fs := e.flagSet(group + " " + verb)
	server := e.serverFlag(fs)
	format := outputFlag(fs, formatTable, formatJSON, formatYAML)
	if extra != nil {
		extra(fs)
	}
	pos, err := e.parse(fs, synopsis, args, true)
	if err != nil {
		return nil, err
	}
	if len(pos) > want {
		return nil, usagef("%s %s: unexpected argument %q\n%s", group, verb, pos[want], usage)
	}
	if len(pos) < want {
		return nil, usagef("%s %s: want %s\n%s", group, verb, synopsis, usage)
	}
	addr, err := serverAddr(*server)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return &subCommand{args: pos, format: format.value, c: e.dial(addr)}, nil
}

func (e *env) jobType(ctx context.Context, args []string) error {
	if len(args) > 0 && IsHelp(args[0]) {
		fmt.Fprintln(e.Out, jobTypeUsage)
		return errHelpShown
	}
	if len(args) == 0 {
		return usagef("jobtype: missing subcommand\n%s", jobTypeUsage)
	}
	switch verb, args := args[0], args[1:]; verb {
	case "set":
		return e.jobTypeSet(ctx, args)
	case "list":
		return e.jobTypeList(ctx, args)
	case "get":
		return e.jobTypeGet(ctx, args)
	case "delete":
		return e.jobTypeDelete(ctx, args)
	default:
		return usagef("jobtype: unknown subcommand %q\n%s", verb, jobTypeUsage)
	}
}

func (e *env) jobTypeSet(ctx context.Context, args []string) error {
	var maxAttempts int32Flag
	var codes int32sFlag
	var initial, maxBackoff durationFlag
	cmd, err := e.parseSub("jobtype", jobTypeUsage, "set", "TYPE", 1, args, func(fs *flag.FlagSet) {
		fs.Var(&maxAttempts, "max-attempts", "`N` attempts in all, the first included (0: the server's default)")
		fs.Var(&codes, "retry-exit-code", "retry when a job exits with this `code` (repeatable)")
		fs.Var(&initial, "backoff-initial", "first retry delay as a Go `duration` (default 1s); doubles per attempt")
		fs.Var(&maxBackoff, "backoff-max", "longest retry delay as a Go `duration` (default 32s)")
	})
	if err != nil {
		return err
	}
	defer cmd.c.close()
	r := &hodeiv1.RetryPolicy{MaxAttempts: int32(maxAttempts), RetryableExitCodes: codes}
	if initial != 0 {
		r.InitialBackoff = durationpb.New(time.Duration(initial))
	}
	if maxBackoff != 0 {
		r.MaxBackoff = durationpb.New(time.Duration(maxBackoff))
	}
	resp, err := cmd.c.jobTypes.SetJobType(ctx, connect.NewRequest(&hodeiv1.SetJobTypeRequest{JobType: &hodeiv1.JobType{Name: cmd.args[0], Retry: r}}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	fmt.Fprintf(e.Out, "job type %s set: %s\n", cmd.args[0], retryText(resp.Msg.GetJobType().GetRetry()))
	return nil
}

func (e *env) jobTypeList(ctx context.Context, args []string) error {
	cmd, err := e.parseSub("jobtype", jobTypeUsage, "list", "", 0, args, nil)
	if err != nil {
		return err
	}
	defer cmd.c.close()
	resp, err := cmd.c.jobTypes.ListJobTypes(ctx, connect.NewRequest(&hodeiv1.ListJobTypesRequest{}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	return e.jobTypeTable(resp.Msg.GetJobTypes())
}

func (e *env) jobTypeGet(ctx context.Context, args []string) error {
	cmd, err := e.parseSub("jobtype", jobTypeUsage, "get", "TYPE", 1, args, nil)
	if err != nil {
		return err
	}
	defer cmd.c.close()
	resp, err := cmd.c.jobTypes.GetJobType(ctx, connect.NewRequest(&hodeiv1.GetJobTypeRequest{Name: cmd.args[0]}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	return e.jobTypeTable([]*hodeiv1.JobType{resp.Msg.GetJobType()})
}

func (e *env) jobTypeDelete(ctx context.Context, args []string) error {
	cmd, err := e.parseSub("jobtype", jobTypeUsage, "delete", "TYPE", 1, args, nil)
	if err != nil {
		return err
	}
	defer cmd.c.close()
	if _, err := cmd.c.jobTypes.DeleteJobType(ctx, connect.NewRequest(&hodeiv1.DeleteJobTypeRequest{Name: cmd.args[0]})); err != nil {
		return err
	}
	fmt.Fprintf(e.Out, "job type %s deleted\n", cmd.args[0])
	return nil
}

func (e *env) jobTypeTable(types []*hodeiv1.JobType) error {
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tMAX ATTEMPTS\tRETRY EXIT CODES\tBACKOFF\tUPDATED")
	for _, t := range types {
		r := t.GetRetry()
		attempts := "-"
		if r.GetMaxAttempts() > 0 {
			attempts = fmt.Sprint(r.GetMaxAttempts())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.GetName(), attempts, dash(codesText(r.GetRetryableExitCodes())), backoffText(r),
			t.GetUpdatedAt().AsTime().In(e.loc).Format(time.RFC3339))
	}
	return tw.Flush()
}

// retryText says what a job type's policy sets.
func retryText(r *hodeiv1.RetryPolicy) string {
	var parts []string
	if r.GetMaxAttempts() > 0 {
		parts = append(parts, fmt.Sprintf("max attempts %d", r.GetMaxAttempts()))
	}
	if c := codesText(r.GetRetryableExitCodes()); c != "" {
		parts = append(parts, "retry exit codes "+c)
	}
	parts = append(parts, "backoff "+backoffText(r))
	return strings.Join(parts, ", ")
}

func codesText(codes []int32) string {
	s := make([]string, len(codes))
	for i, c := range codes {
		s[i] = fmt.Sprint(c)
	}
	return strings.Join(s, ",")
}

// backoffText is "initial..max", the server's defaults for what is unset.
func backoffText(r *hodeiv1.RetryPolicy) string {
	initial, maxB := "1s", "32s"
	if d := r.GetInitialBackoff(); d != nil {
		initial = d.AsDuration().String()
	}
	if d := r.GetMaxBackoff(); d != nil {
		maxB = d.AsDuration().String()
	}
	return initial + ".." + maxB
}
