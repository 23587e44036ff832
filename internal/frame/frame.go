// Package frame groups the messages of a worker stream into batch frames
// (RequestBatch, ResponseBatch: one write for many messages), with the
// limits both ends of the stream keep.
package frame

import "google.golang.org/protobuf/proto"

// A frame holds at most MaxMsgs messages and stops growing past MaxBytes.
const (
	MaxMsgs  = 128
	MaxBytes = 1 << 20
)

// Group splits msgs, in order, into frames of at most MaxMsgs messages that
// stop growing past MaxBytes (a message alone may be larger). A frame of
// one message is that message; a longer one is what batch makes of it.
func Group[M proto.Message](msgs []M, batch func([]M) M) []M {
	if len(msgs) < 2 {
		return msgs
	}
	var out, cur []M
	size := 0
	flush := func() {
		switch len(cur) {
		case 0:
		case 1:
			out = append(out, cur[0])
		default:
			out = append(out, batch(cur))
		}
		cur, size = nil, 0
	}
	for _, m := range msgs {
		cur = append(cur, m)
		size += proto.Size(m)
		if len(cur) == MaxMsgs || size >= MaxBytes {
			flush()
		}
	}
	flush()
	return out
}
