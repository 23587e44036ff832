package agent

import (
	"testing"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/frame"
)

// TestFrames: reports waiting together go as RequestBatch frames, in
// order, never over frame.MaxMsgs messages or much past frame.MaxBytes; a lone
// report stays unwrapped; a server that does not accept batches gets the
// messages as they are.
func TestFrames(t *testing.T) {
	msg := func(token int64, data int) *hodeiv1.ConnectRequest {
		return &hodeiv1.ConnectRequest{Msg: &hodeiv1.ConnectRequest_Logs{Logs: &hodeiv1.LogBatch{FencingToken: token,
			Lines: []*hodeiv1.LogLine{{Data: make([]byte, data)}}}}}
	}
	var msgs []*hodeiv1.ConnectRequest
	for i := range frame.MaxMsgs + 10 {
		msgs = append(msgs, msg(int64(i), 10))
	}
	flat := func(frames []*hodeiv1.ConnectRequest) (tokens []int64) {
		for _, f := range frames {
			if b := f.GetBatch(); b != nil {
				if len(b.Msgs) < 2 || len(b.Msgs) > frame.MaxMsgs {
					t.Fatalf("batch of %d messages", len(b.Msgs))
				}
				for _, m := range b.Msgs {
					tokens = append(tokens, m.GetLogs().FencingToken)
				}
				continue
			}
			tokens = append(tokens, f.GetLogs().FencingToken)
		}
		return tokens
	}
	check := func(name string, frames []*hodeiv1.ConnectRequest, n, wantFrames int) {
		t.Helper()
		tokens := flat(frames)
		if len(tokens) != n || len(frames) != wantFrames {
			t.Fatalf("%s: %d messages in %d frames, want %d in %d", name, len(tokens), len(frames), n, wantFrames)
		}
		for i, tok := range tokens {
			if tok != int64(i) {
				t.Fatalf("%s: message %d has token %d: order lost", name, i, tok)
			}
		}
	}
	check("many", frames(msgs, true), frame.MaxMsgs+10, 2)
	check("no batches", frames(msgs, false), frame.MaxMsgs+10, frame.MaxMsgs+10)
	check("one", frames(msgs[:1], true), 1, 1)
	if frames(msgs[:1], true)[0].GetBatch() != nil {
		t.Fatal("a lone message was wrapped")
	}
	big := []*hodeiv1.ConnectRequest{msg(0, frame.MaxBytes/2), msg(1, frame.MaxBytes/2), msg(2, 10), msg(3, 10)}
	check("big", frames(big, true), 4, 2)
}
