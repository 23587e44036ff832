package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

const tokenUsage = `usage: hodei token create NAME --scope S [--scope S]... [--ttl D] [--database]
       hodei token list
       hodei token revoke NAME|ID
scopes: jobs:read, jobs:write (implies jobs:read), metrics, admin (implies all)`

func (e *env) tokenCmd(ctx context.Context, args []string) error {
	if len(args) > 0 && IsHelp(args[0]) {
		fmt.Fprintln(e.Out, tokenUsage)
		return errHelpShown
	}
	if len(args) == 0 {
		return usagef("token: missing subcommand\n%s", tokenUsage)
	}
	switch verb, args := args[0], args[1:]; verb {
	case "create":
		return e.tokenCreate(ctx, args)
	case "list":
		return e.tokenList(ctx, args)
	case "revoke":
		return e.tokenRevoke(ctx, args)
	default:
		return usagef("token: unknown subcommand %q\n%s", verb, tokenUsage)
	}
}

func (e *env) tokenCreate(ctx context.Context, args []string) error {
	var scopes stringsFlag
	var ttl time.Duration
	var database bool
	cmd, err := e.parseSub("token", tokenUsage, "create", "NAME", 1, args, func(fs *flag.FlagSet) {
		fs.Var(&scopes, "scope", "`scope` of the token: jobs:read, jobs:write, secrets:use, metrics or admin (repeatable; at least one)")
		fs.DurationVar(&ttl, "ttl", 0, "the token expires this `duration` after its creation (default: never)")
		fs.BoolVar(&database, "database", false, "create the token directly in the database at HODEI_DATABASE_URL, without a server or a token (the first admin token of an installation)")
	})
	if err != nil {
		return err
	}
	defer cmd.c.close()
	if len(scopes) == 0 {
		return usagef("token create: at least one --scope is required\n%s", tokenUsage)
	}
	if ttl < 0 {
		return usagef("token create: --ttl %s: must not be negative", ttl)
	}
	var resp *hodeiv1.CreateTokenResponse
	if database {
		if e.CreateTokenInDatabase == nil {
			return usagef("token create: --database is not available here")
		}
		if resp, err = e.CreateTokenInDatabase(ctx, cmd.args[0], scopes, ttl); err != nil {
			return err
		}
	} else {
		r, err := cmd.c.tokens.CreateToken(ctx, connect.NewRequest(&hodeiv1.CreateTokenRequest{Name: cmd.args[0], Scopes: scopes,
			TtlSeconds: int64(ttl / time.Second)}))
		if err != nil {
			return err
		}
		resp = r.Msg
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp)
	}
	t := resp.GetToken()
	fmt.Fprintf(e.Err, "token %s created with scopes %s, expires %s; its secret, on stdout, is shown only now\n",
		t.GetName(), strings.Join(t.GetScopes(), ","), e.timeOrNever(t.GetExpiresAt()))
	fmt.Fprintln(e.Out, resp.GetSecret())
	return nil
}

func (e *env) timeOrNever(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "never"
	}
	return ts.AsTime().In(e.loc).Format(time.RFC3339)
}

func (e *env) timeOrDash(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().In(e.loc).Format(time.RFC3339)
}

func (e *env) tokenList(ctx context.Context, args []string) error {
	cmd, err := e.parseSub("token", tokenUsage, "list", "", 0, args, nil)
	if err != nil {
		return err
	}
	defer cmd.c.close()
	resp, err := cmd.c.tokens.ListTokens(ctx, connect.NewRequest(&hodeiv1.ListTokensRequest{}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tSCOPES\tCREATED\tEXPIRES\tREVOKED\tLAST USED")
	for _, t := range resp.Msg.GetTokens() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.GetName(), t.GetId(), strings.Join(t.GetScopes(), ","), e.timeOrDash(t.GetCreatedAt()),
			e.timeOrNever(t.GetExpiresAt()), e.timeOrDash(t.GetRevokedAt()), e.timeOrDash(t.GetLastUsedAt()))
	}
	return tw.Flush()
}

func (e *env) tokenRevoke(ctx context.Context, args []string) error {
	cmd, err := e.parseSub("token", tokenUsage, "revoke", "NAME|ID", 1, args, nil)
	if err != nil {
		return err
	}
	defer cmd.c.close()
	resp, err := cmd.c.tokens.RevokeToken(ctx, connect.NewRequest(&hodeiv1.RevokeTokenRequest{Token: cmd.args[0]}))
	if err != nil {
		return err
	}
	if cmd.format != formatTable {
		return e.printMessage(cmd.format, resp.Msg)
	}
	fmt.Fprintf(e.Out, "token %s revoked\n", resp.Msg.GetToken().GetName())
	return nil
}
