package eventbus

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

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
	// raw is the encoded payload of an event read from the log, decoded
	// into Payload only when the event is handed to a handler or to a tail
	// that is not lazy: most events the feed reads match no tail.
	raw []byte
}

// Decode returns the event's payload, decoding it when a lazy tail
// (Filter.Lazy) handed the event over still encoded.
func (e Event) Decode() (*hodeiv1.EventPayload, error) {
	d, err := e.decoded()
	return d.Payload, err
}

// decoded returns e with its payload decoded.
func (e Event) decoded() (Event, error) {
	if e.Payload != nil || e.raw == nil {
		return e, nil
	}
	p := &hodeiv1.EventPayload{}
	if err := proto.Unmarshal(e.raw, p); err != nil {
		return e, fmt.Errorf("decode event %d: %w", e.ID, err)
	}
	e.Payload, e.raw = p, nil
	return e, nil
}

// Proto returns the event as its API message, with Payload as it is (a
// lazy tail's event has none until it is decoded).
func (e Event) Proto() *hodeiv1.Event {
	return &hodeiv1.Event{Id: e.ID, Type: e.Type, AggregateKind: e.AggregateKind, AggregateId: e.AggregateID,
		Time: timestamppb.New(e.Time), CorrelationId: e.CorrelationID, Payload: e.Payload}
}

// New returns an event about an aggregate with the given payload; the
// payload is one of the hodei.v1 event messages (e.g. &hodeiv1.JobCreated{}).
func New(aggregateKind, aggregateID string, payload proto.Message) Event {
	p := wrap(payload)
	return Event{Type: TypeOf(p), AggregateKind: aggregateKind, AggregateID: aggregateID, Payload: p}
}

var payloadOneof = (&hodeiv1.EventPayload{}).ProtoReflect().Descriptor().Oneofs().ByName("kind")

// The catalog's Go types, found once through protobuf reflection: wrapping
// a payload and naming its type, which every event does, are then map
// lookups instead of oneof reflection.
var (
	wrapperOf = map[reflect.Type]reflect.Type{} // *JobCreated -> *EventPayload_JobCreated
	typeNames = map[reflect.Type]string{}       // *EventPayload_JobCreated -> "JobCreated"
)

func init() {
	fields := payloadOneof.Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		p := &hodeiv1.EventPayload{}
		m := p.ProtoReflect().NewField(f).Message()
		p.ProtoReflect().Set(f, protoreflect.ValueOfMessage(m))
		kind := reflect.TypeOf(p.Kind)
		wrapperOf[reflect.TypeOf(m.Interface())] = kind
		typeNames[kind] = string(f.Message().Name())
	}
}

// wrap puts a payload message into its EventPayload field.
func wrap(m proto.Message) *hodeiv1.EventPayload {
	if p, ok := m.(*hodeiv1.EventPayload); ok {
		return p
	}
	kind, ok := wrapperOf[reflect.TypeOf(m)]
	if !ok {
		panic(fmt.Sprintf("eventbus: %s is not an event payload", m.ProtoReflect().Descriptor().FullName()))
	}
	w := reflect.New(kind.Elem())
	w.Elem().Field(0).Set(reflect.ValueOf(m))
	p := &hodeiv1.EventPayload{}
	reflect.ValueOf(&p.Kind).Elem().Set(w)
	return p
}

// TypeOf returns the event type name of a payload ("" when empty).
func TypeOf(p *hodeiv1.EventPayload) string {
	if p == nil || p.Kind == nil {
		return ""
	}
	return typeNames[reflect.TypeOf(p.Kind)]
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

// maxPerRow is the most events one row of event_batches holds (the step
// of the event_ids sequence).
const maxPerRow = 1 << 16

// Publish inserts the events in the caller's transaction (tx); the insert
// notifies the bus (a trigger on event_batches, migrations 0008 and 0013).
// They become visible to subscribers when tx commits and vanish if it
// rolls back. It returns the events' ids in order.
func Publish(ctx context.Context, tx db.DBTX, events ...Event) ([]int64, error) {
	ids := make([]int64, 0, len(events))
	for chunk := range slices.Chunk(events, maxPerRow) {
		p, err := insertParams(chunk)
		if err != nil {
			return nil, err
		}
		first, err := db.New(tx).InsertEvents(ctx, db.InsertEventsParams(p))
		if err != nil {
			return nil, fmt.Errorf("publish: insert: %w", err)
		}
		for i := range chunk {
			ids = append(ids, first+int64(i))
		}
	}
	return ids, nil
}

// Append is Publish for callers that do not need the ids: its statements
// read nothing back, so tx may queue them in a batch that is sent with the
// rest of the transaction's writes.
func Append(ctx context.Context, tx db.DBTX, events ...Event) error {
	for chunk := range slices.Chunk(events, maxPerRow) {
		p, err := insertParams(chunk)
		if err != nil {
			return err
		}
		if err := db.New(tx).AppendEvents(ctx, p); err != nil {
			return fmt.Errorf("publish: insert: %w", err)
		}
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

// row is one row of event_batches: the events of one publish.
type row db.GetEventRow

// valid reports whether the row's arrays are as long as each other (the
// table's CHECK holds them to it; a reader never indexes past them).
func (r row) valid() bool {
	n := len(r.Types)
	return n > 0 && len(r.AggregateKinds) == n && len(r.AggregateIds) == n && len(r.CorrelationIds) == n && len(r.Payloads) == n
}

// event returns the row's event with the given id, its payload still
// encoded (see Event.decoded).
func (r row) event(id int64) (Event, error) {
	i := id - r.FirstID
	if !r.valid() || i < 0 || i >= int64(len(r.Types)) {
		return Event{}, fmt.Errorf("decode event %d: not in the row of events %d to %d", id, r.FirstID, r.FirstID+int64(len(r.Types))-1)
	}
	return Event{ID: id, XID: r.Xid, Type: r.Types[i], AggregateKind: r.AggregateKinds[i], AggregateID: r.AggregateIds[i],
		CorrelationID: r.CorrelationIds[i], Time: r.CreatedAt, raw: r.Payloads[i]}, nil
}

// decodedEvent is event with the payload decoded.
func (r row) decodedEvent(id int64) (Event, error) {
	e, err := r.event(id)
	if err != nil {
		return e, err
	}
	return e.decoded()
}
