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

// The largest messages of an agent are its log batches: at most
// MaxBatchLines lines of at most MaxLineBytes each.
const (
	MaxLineBytes  = 64 << 10
	MaxBatchLines = 256
)

// MaxFrameBytes bounds the encoded size of one frame an agent sends; the
// server refuses a larger one. A frame stops growing once it reaches
// MaxBytes, so it holds less than MaxBytes of messages before its last
// one, plus that last one and the batch's framing of each message. The
// largest message is a full log batch:
//
//	per line    MaxLineBytes of data + 32 (a length of 3 bytes, stream,
//	            partial, a timestamp of at most 20 bytes, the line's own
//	            tag and length of 4 bytes): 65,568
//	per batch   256 lines = 16,785,408, + 256 for the token, the seq, the
//	            dropped count and the job id, + 8 for its tag in
//	            ConnectRequest: 16,785,672
//	per frame   MaxBytes (1,048,576) + 16,785,672 + 6 of tag and length
//	            per message (128 × 6 = 768) + 16 = 17,835,032, about 17 MiB
//
// A hello lists the agent's running attempts, under 64 bytes each: it
// stays below this bound up to about 270,000 of them.
const MaxFrameBytes = MaxBytes + MaxBatchLines*(MaxLineBytes+32) + 256 + 8 + MaxMsgs*6 + 16

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
