package cli

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

func chunk(attempt int32, seq int64, data string) *hodeiv1.LogChunk {
	return &hodeiv1.LogChunk{Attempt: attempt, Seq: seq, Data: []byte(data)}
}

// feed passes streams through one cursor and returns the admitted data.
func feed(streams ...[]*hodeiv1.LogChunk) []string {
	var c logCursor
	var got []string
	for _, s := range streams {
		c.newStream()
		for _, ch := range s {
			if c.admit(ch) {
				got = append(got, string(ch.Data))
			}
		}
	}
	return got
}

func TestLogCursor(t *testing.T) {
	tests := []struct {
		name    string
		streams [][]*hodeiv1.LogChunk
		want    []string
	}{
		{
			name:    "one stream passes everything, even out of order",
			streams: [][]*hodeiv1.LogChunk{{chunk(1, 2, "a"), chunk(1, 1, "b"), chunk(1, 1, "c")}},
			want:    []string{"a", "b", "c"},
		},
		{
			name: "replay after a break is skipped",
			streams: [][]*hodeiv1.LogChunk{
				{chunk(1, 1, "a"), chunk(1, 1, "b"), chunk(1, 2, "c")},
				{chunk(1, 1, "a"), chunk(1, 1, "b"), chunk(1, 2, "c"), chunk(1, 2, "d"), chunk(1, 3, "e"), chunk(2, 1, "f")},
			},
			want: []string{"a", "b", "c", "d", "e", "f"},
		},
		{
			name: "break inside a batch resumes at the next chunk of that batch",
			streams: [][]*hodeiv1.LogChunk{
				{chunk(1, 1, "a")},
				{chunk(1, 1, "a"), chunk(1, 1, "b"), chunk(1, 2, "c")},
			},
			want: []string{"a", "b", "c"},
		},
		{
			name: "several breaks, one with nothing new",
			streams: [][]*hodeiv1.LogChunk{
				{chunk(1, 1, "a")},
				{chunk(1, 1, "a")},
				{chunk(1, 1, "a"), chunk(2, 1, "b")},
				{chunk(1, 1, "a"), chunk(2, 1, "b"), chunk(2, 2, "c")},
			},
			want: []string{"a", "b", "c"},
		},
		{
			name: "nothing printed before the break: the replay passes",
			streams: [][]*hodeiv1.LogChunk{
				{},
				{chunk(1, 1, "a")},
			},
			want: []string{"a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, feed(tt.streams...)); diff != "" {
				t.Errorf("admitted (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteChunk(t *testing.T) {
	e, out, errOut := testEnv(t, nil, nil)
	for _, ch := range []*hodeiv1.LogChunk{
		{Stream: hodeiv1.LogStream_LOG_STREAM_STDOUT, Data: []byte("out 1\n")},
		{Stream: hodeiv1.LogStream_LOG_STREAM_STDERR, Data: []byte("err 1\n")},
		{Stream: hodeiv1.LogStream_LOG_STREAM_SYSTEM, Data: []byte("log truncated\nat 10 MiB\n")},
		{Stream: hodeiv1.LogStream_LOG_STREAM_STDOUT, Data: []byte("partial")},
		{Stream: hodeiv1.LogStream_LOG_STREAM_SYSTEM, Data: []byte("no newline")},
	} {
		e.writeChunk(ch)
	}
	if got, want := out.String(), "out 1\npartial"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got, want := errOut.String(), "err 1\nhodei: log truncated\nhodei: at 10 MiB\nhodei: no newline\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
}
