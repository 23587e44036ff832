package eventbus

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// Channel is the NOTIFY channel of the bus.
const Channel = "hodei_events"

// Event is one durable fact. Type is the name of the payload message
// (e.g. "JobCreated"); the catalog is hodei.v1.EventPayload.
type Event struct {
	ID            int64
	XID           int64
	Type          string
	AggregateKind string
	AggregateID   string
	CorrelationID string
	Time          time.Time
	Payload       *hodeiv1.EventPayload
}

// New returns an event about an aggregate with the given payload; the
// payload is one of the hodei.v1 event messages (e.g. &hodeiv1.JobCreated{}).
func New(aggregateKind, aggregateID string, payload proto.Message) Event {
	p := wrap(payload)
	return Event{Type: TypeOf(p), AggregateKind: aggregateKind, AggregateID: aggregateID, Payload: p}
}

var payloadOneof = (&hodeiv1.EventPayload{}).ProtoReflect().Descriptor().Oneofs().ByName("kind")

// wrap puts a payload message into its EventPayload field.
func wrap(m proto.Message) *hodeiv1.EventPayload {
	if p, ok := m.(*hodeiv1.EventPayload); ok {
		return p
	}
	p := &hodeiv1.EventPayload{}
	name := m.ProtoReflect().Descriptor().FullName()
	fields := payloadOneof.Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		if f.Message().FullName() == name {
			p.ProtoReflect().Set(f, protoreflect.ValueOfMessage(m.ProtoReflect()))
			return p
		}
	}
	panic(fmt.Sprintf("eventbus: %s is not an event payload", name))
}

// TypeOf returns the event type name of a payload ("" when empty).
func TypeOf(p *hodeiv1.EventPayload) string {
	f := p.ProtoReflect().WhichOneof(payloadOneof)
	if f == nil {
		return ""
	}
	return string(f.Message().Name())
}

// Types lists every event type of the catalog.
func Types() []string {
	fields := payloadOneof.Fields()
	out := make([]string, fields.Len())
	for i := range out {
		out[i] = string(fields.Get(i).Message().Name())
	}
	return out
}

// Publish inserts the events in the caller's transaction (tx); the insert
// notifies the bus (a trigger on events, migration 0008). They become
// visible to subscribers when tx commits and vanish if it rolls back. It
// returns the events' ids in order.
func Publish(ctx context.Context, tx db.DBTX, events ...Event) ([]int64, error) {
	if len(events) == 0 {
		return nil, nil
	}
	p, err := insertParams(events)
	if err != nil {
		return nil, err
	}
	ids, err := db.New(tx).InsertEvents(ctx, db.InsertEventsParams(p))
	if err != nil {
		return nil, fmt.Errorf("publish: insert: %w", err)
	}
	return ids, nil
}

// Append is Publish for callers that do not need the ids: its one
// statement reads nothing back, so tx may queue it in a batch that is sent
// with the rest of the transaction's writes.
func Append(ctx context.Context, tx db.DBTX, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	p, err := insertParams(events)
	if err != nil {
		return err
	}
	if err := db.New(tx).AppendEvents(ctx, p); err != nil {
		return fmt.Errorf("publish: insert: %w", err)
	}
	return nil
}

func insertParams(events []Event) (db.AppendEventsParams, error) {
	n := len(events)
	p := db.AppendEventsParams{
		Types: make([]string, n), AggregateKinds: make([]string, n), AggregateIds: make([]string, n),
		CorrelationIds: make([]string, n), Payloads: make([][]byte, n),
	}
	for i, e := range events {
		if e.Type == "" || e.Type != TypeOf(e.Payload) {
			return p, fmt.Errorf("publish: event %d: type %q does not match its payload", i, e.Type)
		}
		b, err := proto.Marshal(e.Payload)
		if err != nil {
			return p, fmt.Errorf("publish: marshal %s: %w", e.Type, err)
		}
		p.Types[i], p.AggregateKinds[i], p.AggregateIds[i] = e.Type, e.AggregateKind, e.AggregateID
		p.CorrelationIds[i], p.Payloads[i] = e.CorrelationID, b
	}
	return p, nil
}

func decode(r db.ReadEventsRow) (Event, error) {
	p := &hodeiv1.EventPayload{}
	if err := proto.Unmarshal(r.Payload, p); err != nil {
		return Event{}, fmt.Errorf("decode event %d: %w", r.ID, err)
	}
	return Event{ID: r.ID, XID: r.Xid, Type: r.Type, AggregateKind: r.AggregateKind, AggregateID: r.AggregateID,
		CorrelationID: r.CorrelationID, Time: r.CreatedAt, Payload: p}, nil
}
