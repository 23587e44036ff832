package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

const webhookUsage = `usage: hodei webhook add NAME URL --type T [--type T]... [--label K=V]... [--secret-file F] [--max-attempts N]
       hodei webhook list
       hodei webhook remove NAME
       hodei webhook deliveries NAME [--limit N]
       hodei webhook replay NAME (--id EVENT_ID [--id EVENT_ID]... | --all)`

func (e *env) webhook(ctx context.Context, args []string) error {
	if len(args) > 0 && IsHelp(args[0]) {
		fmt.Fprintln(e.Out, webhookUsage)
		return errHelpShown
	}
	if len(args) == 0 {
		return usagef("webhook: missing subcommand\n%s", webhookUsage)
	}
	switch verb, args := args[0], args[1:]; verb {
	case "add":
		return e.webhookAdd(ctx, args)
	case "list":
		return e.webhookList(ctx, args)
	case "remove":
		return e.webhookRemove(ctx, args)
	case "deliveries":
		return e.webhookDeliveries(ctx, args)
	case "replay":
		return e.webhookReplay(ctx, args)
	default:
		return usagef("webhook: unknown subcommand %q\n%s", verb, webhookUsage)
	}
}

func (e *env) webhookAdd(ctx context.Context, args []string) error {
	var types stringsFlag
	var labels KVFlag
	var secretFile string
	var maxAttempts int32Flag
	cmd, err := e.parseSub("webhook", webhookUsage, "add", "NAME URL", 2, args, func(fs *flag.FlagSet) {
		fs.Var(&types, "type", "send events of this `type`, e.g. JobFailed (repeatable; at least one)")
		fs.Var(&labels, "label", "only events of jobs with label `K=V` (repeatable)")
		fs.StringVar(&secretFile, "secret-file", "", "sign with the secret in `FILE` (default: the server makes one and it is printed once)")
		fs.Var(&maxAttempts, "max-attempts", "attempts per event before it becomes a failed delivery: `N` (default 8)")
	})
	if err != nil {
		return err
	}
	defer cmd.c.close()
	if len(types) == 0 {
		return usagef("webhook add: at least one --type is required\n%s", webhookUsage)
	}
	req := &hodeiv1.CreateWebhookRequest{Webhook: &hodeiv1.Webhook{Name: cmd.args[0], Url: cmd.args[1], Types: types, Labels: labels,
		MaxAttempts: int32(maxAttempts)}}
	if secretFile != "" {
		b, err := e.readFile(secretFile)
		if err != nil {
			return usagef("webhook add: --secret-file: %v", err)
		}
		if req.Secret = strings.TrimRight(string(b), "\r\n"); req.Secret == "" {
			return usagef("webhook add: --secret-file %s is empty", secretFile)
		}
	}
	resp, err := cmd.c.webhooks.CreateWebhook(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	w := resp.Msg.GetWebhook()
	fmt.Fprintf(e.Out, "webhook %s added: %s to %s\n", w.GetName(), strings.Join(w.GetTypes(), ", "), w.GetUrl())
	if s := resp.Msg.GetSecret(); s != "" {
		fmt.Fprintf(e.Out, "signing secret (shown only now): %s\n", s)
	}
	return nil
}

func (e *env) webhookList(ctx context.Context, args []string) error {
	cmd, err := e.parseSub("webhook", webhookUsage, "list", "", 0, args, nil)
	if err != nil {
		return err
	}
	defer cmd.c.close()
	resp, err := cmd.c.webhooks.ListWebhooks(ctx, connect.NewRequest(&hodeiv1.ListWebhooksRequest{}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tURL\tTYPES\tLABELS\tMAX ATTEMPTS\tCREATED")
	for _, w := range resp.Msg.GetWebhooks() {
		labels := KVFlag(w.GetLabels())
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", w.GetName(), w.GetUrl(), strings.Join(w.GetTypes(), ","), dash(labels.String()),
			w.GetMaxAttempts(), w.GetCreatedAt().AsTime().In(e.loc).Format(time.RFC3339))
	}
	return tw.Flush()
}

func (e *env) webhookRemove(ctx context.Context, args []string) error {
	cmd, err := e.parseSub("webhook", webhookUsage, "remove", "NAME", 1, args, nil)
	if err != nil {
		return err
	}
	defer cmd.c.close()
	if _, err := cmd.c.webhooks.DeleteWebhook(ctx, connect.NewRequest(&hodeiv1.DeleteWebhookRequest{Name: cmd.args[0]})); err != nil {
		return err
	}
	fmt.Fprintf(e.Out, "webhook %s removed\n", cmd.args[0])
	return nil
}

func (e *env) webhookDeliveries(ctx context.Context, args []string) error {
	var limit int32Flag
	cmd, err := e.parseSub("webhook", webhookUsage, "deliveries", "NAME", 1, args, func(fs *flag.FlagSet) {
		fs.Var(&limit, "limit", "the oldest `N` failed deliveries (default 100, at most 1000)")
	})
	if err != nil {
		return err
	}
	defer cmd.c.close()
	if limit < 0 {
		return usagef("webhook deliveries: --limit must not be negative")
	}
	resp, err := cmd.c.webhooks.ListWebhookDeliveries(ctx, connect.NewRequest(&hodeiv1.ListWebhookDeliveriesRequest{Name: cmd.args[0], Limit: int32(limit)}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT\tTYPE\tATTEMPTS\tFAILED AT\tLAST ERROR")
	for _, d := range resp.Msg.GetDeliveries() {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", d.GetEvent().GetId(), d.GetEvent().GetType(), d.GetAttempts(),
			d.GetParkedAt().AsTime().In(e.loc).Format(time.RFC3339), dash(oneLine(d.GetLastError())))
	}
	return tw.Flush()
}

// int64sFlag is a repeatable positive int64 flag.
type int64sFlag []int64

func (l *int64sFlag) String() string {
	if l == nil {
		return ""
	}
	var parts []string
	for _, n := range *l {
		parts = append(parts, strconv.FormatInt(n, 10))
	}
	return strings.Join(parts, ",")
}

func (l *int64sFlag) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		return errors.New("want an event id (a positive integer)")
	}
	*l = append(*l, n)
	return nil
}

func (e *env) webhookReplay(ctx context.Context, args []string) error {
	var ids int64sFlag
	var all bool
	cmd, err := e.parseSub("webhook", webhookUsage, "replay", "NAME", 1, args, func(fs *flag.FlagSet) {
		fs.Var(&ids, "id", "send the failed delivery of event `ID` again (repeatable)")
		fs.BoolVar(&all, "all", false, "send every failed delivery again")
	})
	if err != nil {
		return err
	}
	defer cmd.c.close()
	if all == (len(ids) > 0) {
		return usagef("webhook replay: give --id (repeatable) or --all\n%s", webhookUsage)
	}
	resp, err := cmd.c.webhooks.ReplayWebhookDeliveries(ctx, connect.NewRequest(&hodeiv1.ReplayWebhookDeliveriesRequest{Name: cmd.args[0], EventIds: ids, All: all}))
	if err != nil {
		return err
	}
	m := resp.Msg
	if cmd.format != formatTable {
		if err := e.printMessage(cmd.format, m); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.Out, "delivered %d\n", len(m.GetDelivered()))
	}
	if m.GetFailedEventId() == 0 {
		return nil
	}
	msg := fmt.Sprintf("event %d failed again: %s", m.GetFailedEventId(), m.GetError())
	if n := len(m.GetNotTried()); n > 0 {
		msg += fmt.Sprintf("; %d not tried", n)
	}
	return &exitError{code: ExitError, err: errors.New(msg)}
}
