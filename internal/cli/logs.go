package cli

import (
	"bytes"
	"context"
	"fmt"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// logPos is where a chunk sits in a job's log: attempt, seq, and its index
// among the chunks of that (attempt, seq) in stream order (one stored batch
// may come as several chunks, e.g. one per line or per stream).
type logPos struct {
	attempt int32
	seq     int64
	idx     int
}

func (p logPos) after(q logPos) bool {
	if p.attempt != q.attempt {
		return p.attempt > q.attempt
	}
	if p.seq != q.seq {
		return p.seq > q.seq
	}
	return p.idx > q.idx
}

// logCursor drops the chunks a re-opened log stream replays. The API has
// no "after" field, so a re-opened stream starts from the beginning; the
// cursor skips its chunks up to the last one printed, then lets everything
// through. It assumes the server sends stored chunks in (attempt, seq)
// order, chunked the same way every time.
type logCursor struct {
	last    logPos // last chunk printed
	printed bool   // last is set

	skipTo   logPos // the current stream replays up to here
	skipping bool

	prev      logPos // previous chunk of the current stream
	prevValid bool
}

// newStream starts a (re-)opened stream.
func (c *logCursor) newStream() {
	c.skipping, c.skipTo = c.printed, c.last
	c.prevValid = false
}

// admit reports whether ch is new and should be printed.
func (c *logCursor) admit(ch *hodeiv1.LogChunk) bool {
	p := logPos{attempt: ch.GetAttempt(), seq: ch.GetSeq()}
	if c.prevValid && c.prev.attempt == p.attempt && c.prev.seq == p.seq {
		p.idx = c.prev.idx + 1
	}
	c.prev, c.prevValid = p, true
	if c.skipping {
		if !p.after(c.skipTo) {
			return false
		}
		c.skipping = false
	}
	c.last, c.printed = p, true
	return true
}

// writeChunk prints a chunk: stdout to Out, stderr raw to Err, system
// lines to Err prefixed with "hodei: ".
func (e *env) writeChunk(ch *hodeiv1.LogChunk) {
	switch ch.GetStream() {
	case hodeiv1.LogStream_LOG_STREAM_STDERR:
		e.Err.Write(ch.GetData())
	case hodeiv1.LogStream_LOG_STREAM_SYSTEM:
		data := bytes.TrimSuffix(ch.GetData(), []byte("\n"))
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			fmt.Fprintf(e.Err, "hodei: %s\n", line)
		}
	default:
		e.Out.Write(ch.GetData())
	}
}

// streamLogs prints a job's logs. Without follow it prints the stored
// history and returns a nil job. With follow it returns the final job
// carried by the last message, re-opening the stream if it breaks.
func (e *env) streamLogs(ctx context.Context, c *clients, req *hodeiv1.GetJobLogsRequest) (*hodeiv1.Job, error) {
	var cursor logCursor
	var settled *hodeiv1.Job // final per GetJob, though the stream did not say so
	rc := e.reconnector("logs")
	for {
		cursor.newStream()
		var final *hodeiv1.Job
		opened := e.now()
		stream, err := c.jobs.GetJobLogs(ctx, connect.NewRequest(req))
		if err == nil {
			for stream.Receive() {
				msg := stream.Msg()
				fresh := false
				for _, ch := range msg.GetChunks() {
					if cursor.admit(ch) {
						e.writeChunk(ch)
						fresh = true
					}
				}
				if msg.GetJob() != nil {
					final, fresh = msg.GetJob(), true
				}
				if fresh {
					rc.progress()
				} else {
					rc.alive()
				}
			}
			err = stream.Err()
			stream.Close()
		}
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case final != nil:
			return final, nil
		case err == nil && !req.GetFollow():
			return nil, nil
		case err == nil:
			// The follow ended without the final job: maybe the server
			// is shutting down; maybe the job is final after all.
			resp, gerr := c.jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: req.GetId()}))
			if gerr == nil {
				rc.alive()
				if j := resp.Msg.GetJob(); isFinal(j.GetState()) {
					if settled != nil {
						return j, nil
					}
					// One more pass prints the output stored last.
					settled = j
					continue
				}
			}
			err = gerr
		}
		if err := rc.retry(ctx, opened, err); err != nil {
			return nil, err
		}
	}
}

// isFinal reports whether a job in state s will not change any more
// (unless retried by a user).
func isFinal(s hodeiv1.JobState) bool {
	switch s {
	case hodeiv1.JobState_JOB_STATE_SUCCEEDED, hodeiv1.JobState_JOB_STATE_FAILED,
		hodeiv1.JobState_JOB_STATE_CANCELLED, hodeiv1.JobState_JOB_STATE_TIMED_OUT:
		return true
	}
	return false
}
