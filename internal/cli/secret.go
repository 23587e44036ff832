package cli

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

const secretUsage = `usage: hodei secret set NAME [--from-file F]   (the value is read from stdin without --from-file)
       hodei secret list
       hodei secret delete NAME
       hodei secret rotate-key
       hodei secret audit NAME [--limit N]`

// minSecretBytes is the shortest value the server takes; checked here too
// so that the value is not sent at all.
const minSecretBytes = 4

func (e *env) secret(ctx context.Context, args []string) error {
	if len(args) > 0 && IsHelp(args[0]) {
		fmt.Fprintln(e.Out, secretUsage)
		return errHelpShown
	}
	if len(args) == 0 {
		return usagef("secret: missing subcommand\n%s", secretUsage)
	}
	switch verb, args := args[0], args[1:]; verb {
	case "set":
		return e.secretSet(ctx, args)
	case "list":
		return e.secretList(ctx, args)
	case "delete":
		return e.secretDelete(ctx, args)
	case "rotate-key":
		return e.secretRotateKey(ctx, args)
	case "audit":
		return e.secretAudit(ctx, args)
	default:
		return usagef("secret: unknown subcommand %q\n%s", verb, secretUsage)
	}
}

// secretSet reads the value from stdin or --from-file, never from the
// command line (where ps and shell history would keep it). One trailing
// newline is dropped: `echo pass | hodei secret set db` stores "pass".
func (e *env) secretSet(ctx context.Context, args []string) error {
	var fromFile string
	cmd, err := e.parseSub("secret", secretUsage, "set", "NAME", 1, args, func(fs *flag.FlagSet) {
		fs.StringVar(&fromFile, "from-file", "", "read the value from `FILE` (default: stdin)")
	})
	if err != nil {
		return err
	}
	defer cmd.c.close()
	var value []byte
	if fromFile != "" {
		if value, err = e.readFile(fromFile); err != nil {
			return usagef("secret set: --from-file: %v", err)
		}
	} else if value, err = io.ReadAll(io.LimitReader(e.In, 1<<20)); err != nil {
		return fmt.Errorf("secret set: read stdin: %w", err)
	}
	defer clear(value)
	value = bytes.TrimSuffix(value, []byte("\n"))
	value = bytes.TrimSuffix(value, []byte("\r"))
	if len(value) < minSecretBytes {
		return usagef("secret set: value: must be at least %d bytes (got %d): a shorter value would mask ordinary output", minSecretBytes, len(value))
	}
	resp, err := cmd.c.secrets.SetSecret(ctx, connect.NewRequest(&hodeiv1.SetSecretRequest{Name: cmd.args[0], Value: value}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	fmt.Fprintf(e.Out, "secret %s set (version %d)\n", cmd.args[0], resp.Msg.GetSecret().GetVersion())
	return nil
}

func (e *env) secretList(ctx context.Context, args []string) error {
	cmd, err := e.parseSub("secret", secretUsage, "list", "", 0, args, nil)
	if err != nil {
		return err
	}
	defer cmd.c.close()
	resp, err := cmd.c.secrets.ListSecrets(ctx, connect.NewRequest(&hodeiv1.ListSecretsRequest{}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tUPDATED\tUPDATED BY\tCREATED")
	for _, s := range resp.Msg.GetSecrets() {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", s.GetName(), s.GetVersion(), s.GetUpdatedAt().AsTime().In(e.loc).Format(time.RFC3339),
			dash(s.GetUpdatedBy()), s.GetCreatedAt().AsTime().In(e.loc).Format(time.RFC3339))
	}
	return tw.Flush()
}

func (e *env) secretDelete(ctx context.Context, args []string) error {
	cmd, err := e.parseSub("secret", secretUsage, "delete", "NAME", 1, args, nil)
	if err != nil {
		return err
	}
	defer cmd.c.close()
	if _, err := cmd.c.secrets.DeleteSecret(ctx, connect.NewRequest(&hodeiv1.DeleteSecretRequest{Name: cmd.args[0]})); err != nil {
		return err
	}
	fmt.Fprintf(e.Out, "secret %s deleted\n", cmd.args[0])
	return nil
}

func (e *env) secretRotateKey(ctx context.Context, args []string) error {
	cmd, err := e.parseSub("secret", secretUsage, "rotate-key", "", 0, args, nil)
	if err != nil {
		return err
	}
	defer cmd.c.close()
	resp, err := cmd.c.secrets.RotateSecretKey(ctx, connect.NewRequest(&hodeiv1.RotateSecretKeyRequest{}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	fmt.Fprintf(e.Out, "secret key rotated: new key %s, %d secrets re-sealed\n", resp.Msg.GetKeyId(), resp.Msg.GetSecrets())
	return nil
}

func (e *env) secretAudit(ctx context.Context, args []string) error {
	var limit int
	cmd, err := e.parseSub("secret", secretUsage, "audit", "NAME", 1, args, func(fs *flag.FlagSet) {
		fs.IntVar(&limit, "limit", 100, "the newest `N` entries (at most 1000)")
	})
	if err != nil {
		return err
	}
	defer cmd.c.close()
	resp, err := cmd.c.secrets.ListSecretAudit(ctx, connect.NewRequest(&hodeiv1.ListSecretAuditRequest{Name: cmd.args[0], Limit: int32(limit)}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tOPERATION\tVERSION\tJOB\tATTEMPT\tWORKER\tACTOR")
	for _, a := range resp.Msg.GetEntries() {
		attempt := "-"
		if a.GetAttempt() > 0 {
			attempt = fmt.Sprint(a.GetAttempt())
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", a.GetTime().AsTime().In(e.loc).Format(time.RFC3339), a.GetOperation(), a.GetVersion(),
			dash(a.GetJobId()), attempt, dash(a.GetWorkerId()), dash(a.GetActor()))
	}
	return tw.Flush()
}
