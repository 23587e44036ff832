package cli

import (
	"context"
	"fmt"
	"google.golang.org/protobuf/types/known/durationpb"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

const (
	eventsUsage   = "usage: hodei events tail [--type T]... [--aggregate KIND[:ID]] [--after ID] [-o table|json]"
	providerUsage = `usage: hodei provider list|get NAME|enable NAME|disable NAME [-o table|json|yaml]
       hodei provider set NAME [--max-workers N] [--idle-timeout D] [--ephemeral=true|false]`
)

func (e *env) events(ctx context.Context, args []string) error {
	if len(args) > 0 && IsHelp(args[0]) {
		fmt.Fprintln(e.Out, eventsUsage)
		return errHelpShown
	}
	if len(args) == 0 || args[0] != "tail" {
		return usagef("%s", eventsUsage)
	}
	return e.eventsTail(ctx, args[1:])
}

// eventsTail prints events as they happen, one line each, re-subscribing
// after the last printed id if the stream breaks.
func (e *env) eventsTail(ctx context.Context, args []string) error {
	fs := e.flagSet("events tail")
	server := e.serverFlag(fs)
	format := outputFlag(fs, formatTable, formatJSON)
	var types stringsFlag
	fs.Var(&types, "type", "only events of this `type`, e.g. JobCreated (repeatable)")
	aggregate := fs.String("aggregate", "", "only events of this aggregate: `KIND[:ID]`, e.g. job:0190...")
	var after int64Flag
	fs.Var(&after, "after", "start after this event `id` (0: from now)")
	pos, err := e.parse(fs, "[flags]", args, true)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("events tail: unexpected argument %q", pos[0])
	}
	addr, err := serverAddr(*server)
	if err != nil {
		return usagef("%v", err)
	}
	req := &hodeiv1.SubscribeRequest{AfterId: int64(after), Types: types}
	if *aggregate != "" {
		kind, id, _ := strings.Cut(*aggregate, ":")
		if kind == "" {
			return usagef("events tail: --aggregate %q: want KIND or KIND:ID", *aggregate)
		}
		req.AggregateKind, req.AggregateId = kind, id
	}
	c := e.dial(addr)
	defer c.close()

	rc := e.reconnector("events")
	for {
		opened := e.now()
		stream, err := c.events.Subscribe(ctx, connect.NewRequest(req))
		if err == nil {
			for stream.Receive() {
				ev := stream.Msg().GetEvent()
				if ev == nil || (req.AfterId > 0 && ev.GetId() <= req.AfterId) {
					rc.alive()
					continue
				}
				rc.progress()
				line, err := eventLine(format.value, ev, e.loc)
				if err != nil {
					stream.Close()
					return err
				}
				fmt.Fprintln(e.Out, line)
				req.AfterId = ev.GetId()
			}
			err = stream.Err()
			stream.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := rc.retry(ctx, opened, err); err != nil {
			return err
		}
	}
}

// eventLine renders one event: "ID TIME TYPE KIND:ID PAYLOAD" or one
// compact JSON object.
func eventLine(format string, ev *hodeiv1.Event, loc *time.Location) (string, error) {
	if format == formatJSON {
		b, err := marshalJSON(ev, false)
		return string(b), err
	}
	payload, err := payloadJSON(ev.GetPayload())
	if err != nil {
		return "", err
	}
	when := "-"
	if t := ev.GetTime(); t != nil {
		when = t.AsTime().In(loc).Format(time.RFC3339Nano)
	}
	agg := ev.GetAggregateKind()
	if ev.GetAggregateId() != "" {
		agg += ":" + ev.GetAggregateId()
	}
	return fmt.Sprintf("%d %s %s %s %s", ev.GetId(), when, dash(ev.GetType()), dash(agg), payload), nil
}

// payloadJSON is the compact JSON of the payload's set message, without
// the oneof wrapper (the event type already names it).
func payloadJSON(p *hodeiv1.EventPayload) (string, error) {
	if p == nil {
		return "{}", nil
	}
	m := p.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("kind"))
	var inner proto.Message = p
	if fd != nil {
		inner = m.Get(fd).Message().Interface()
	}
	b, err := marshalJSON(inner, false)
	return string(b), err
}

func (e *env) provider(ctx context.Context, args []string) error {
	if len(args) > 0 && IsHelp(args[0]) {
		fmt.Fprintln(e.Out, providerUsage)
		return errHelpShown
	}
	if len(args) == 0 {
		return usagef("%s", providerUsage)
	}
	verb := args[0]
	fs := e.flagSet("provider " + verb)
	server := e.serverFlag(fs)
	format := outputFlag(fs, formatTable, formatJSON, formatYAML)
	maxWorkers := fs.Int("max-workers", -1, "most workers (set)")
	idle := fs.Duration("idle-timeout", -1, "stop workers idle this long (set)")
	ephemeral := fs.String("ephemeral", "", "true: a worker takes one job (set)")
	var want int
	switch verb {
	case "list":
	case "get", "enable", "disable", "set":
		want = 1
	default:
		return usagef("%s", providerUsage)
	}
	pos, err := e.parse(fs, "NAME [flags]", args[1:], true)
	if err != nil {
		return err
	}
	if len(pos) != want {
		return usagef("provider %s: want %d argument(s), got %d\n%s", verb, want, len(pos), providerUsage)
	}
	addr, err := serverAddr(*server)
	if err != nil {
		return usagef("%v", err)
	}
	c := e.dial(addr)
	defer c.close()
	var p *hodeiv1.Provider
	switch verb {
	case "list":
		resp, err := c.providers.ListProviders(ctx, connect.NewRequest(&hodeiv1.ListProvidersRequest{}))
		if err != nil {
			return err
		}
		if format.value != formatTable {
			return e.printMessage(format.value, resp.Msg)
		}
		e.printProviders(resp.Msg.GetProviders())
		return nil
	case "get":
		resp, err := c.providers.GetProvider(ctx, connect.NewRequest(&hodeiv1.GetProviderRequest{Name: pos[0]}))
		if err != nil {
			return err
		}
		p = resp.Msg.Provider
	default:
		req := &hodeiv1.UpdateProviderRequest{Name: pos[0]}
		switch verb {
		case "enable", "disable":
			on := verb == "enable"
			req.Enabled = &on
		case "set":
			if *maxWorkers >= 0 {
				n := int32(*maxWorkers)
				req.MaxWorkers = &n
			}
			if *idle >= 0 {
				req.IdleTimeout = durationpb.New(*idle)
			}
			switch *ephemeral {
			case "":
			case "true", "false":
				on := *ephemeral == "true"
				req.Ephemeral = &on
			default:
				return usagef("--ephemeral: want true or false, got %q", *ephemeral)
			}
			if req.MaxWorkers == nil && req.IdleTimeout == nil && req.Ephemeral == nil {
				return usagef("provider set: nothing to set\n%s", providerUsage)
			}
		}
		resp, err := c.providers.UpdateProvider(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		p = resp.Msg.Provider
	}
	if format.value != formatTable {
		return e.printMessage(format.value, p)
	}
	e.printProviders([]*hodeiv1.Provider{p})
	return nil
}

func (e *env) printProviders(ps []*hodeiv1.Provider) {
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tENABLED\tHEALTHY\tWORKERS\tIDLE TIMEOUT\tMESSAGE")
	now := e.now()
	for _, p := range ps {
		workers := fmt.Sprint(p.GetWorkers())
		if p.GetMaxWorkers() > 0 {
			workers += fmt.Sprintf("/%d", p.GetMaxWorkers())
		}
		healthy := yesNo(p.GetHealthy())
		if !p.GetHealthy() && p.GetUnhealthySince() != nil {
			healthy += " (" + ageText(now.Sub(p.GetUnhealthySince().AsTime())) + ")"
		}
		idle := "-"
		if d := p.GetIdleTimeout(); d != nil {
			idle = d.AsDuration().String()
		}
		if p.GetEphemeral() {
			idle += " ephemeral"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.GetName(), dash(p.GetKind()),
			yesNo(p.GetEnabled()), healthy, workers, idle, dash(oneLine(p.GetHealthMessage())))
	}
	tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
