package eventbus_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
)

// TestNewWrapsEveryCatalogType: for every field of EventPayload's oneof,
// New puts the message into that field (as protobuf reflection sees it)
// and names the event after it; a message outside the catalog panics.
func TestNewWrapsEveryCatalogType(t *testing.T) {
	oneof := (&hodeiv1.EventPayload{}).ProtoReflect().Descriptor().Oneofs().ByName("kind")
	fields := oneof.Fields()
	if fields.Len() != len(eventbus.Types()) {
		t.Fatalf("Types() lists %d types, the catalog has %d", len(eventbus.Types()), fields.Len())
	}
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		m := (&hodeiv1.EventPayload{}).ProtoReflect().NewField(f).Message().Interface()
		e := eventbus.New("job", "a", m)
		if want := string(f.Message().Name()); e.Type != want || eventbus.TypeOf(e.Payload) != want {
			t.Errorf("%s: Type %q, TypeOf %q", want, e.Type, eventbus.TypeOf(e.Payload))
		}
		got := e.Payload.ProtoReflect().WhichOneof(oneof)
		if got == nil || got.Number() != f.Number() {
			t.Errorf("%s: payload holds field %v, want %d", f.Name(), got, f.Number())
			continue
		}
		if e.Payload.ProtoReflect().Get(got).Message().Interface() != m {
			t.Errorf("%s: payload does not hold the message passed to New", f.Name())
		}
		b, err := proto.Marshal(e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		back := &hodeiv1.EventPayload{}
		if err := proto.Unmarshal(b, back); err != nil || eventbus.TypeOf(back) != e.Type {
			t.Errorf("%s: decoded type %q, %v", f.Name(), eventbus.TypeOf(back), err)
		}
	}
	if eventbus.TypeOf(&hodeiv1.EventPayload{}) != "" || eventbus.TypeOf(nil) != "" {
		t.Error("TypeOf of an empty payload is not empty")
	}
	defer func() {
		if recover() == nil {
			t.Error("New with a message outside the catalog did not panic")
		}
	}()
	eventbus.New("job", "a", &hodeiv1.LogLine{})
}
