package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/jobpb"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/tracing"
)

// applyReports applies agent messages in order: attempt reports (start,
// logs, finish) in one transaction, then their acknowledgements and
// wake-ups. Stale reports are answered with a stale ack (the agent stops
// the attempt), not with an error.
func (s *Server) applyReports(ctx context.Context, c *workerConn, msgs []*hodeiv1.ConnectRequest) error {
	var reports []store.Report
	var lines []int // log lines per report, for the metric
	for _, m := range msgs {
		switch m.Msg.(type) {
		case *hodeiv1.ConnectRequest_Heartbeat:
			if ct := m.GetHeartbeat().GetCounters(); ct != nil {
				c.setAgentCounters(ct)
			}
			// Answered once received (c.lastSeen is already this late): the
			// agent kills its jobs when the answers stop for about a lease.
			c.send(&hodeiv1.ConnectResponse{Msg: &hodeiv1.ConnectResponse_HeartbeatAck{HeartbeatAck: &hodeiv1.HeartbeatAck{}}})
		case *hodeiv1.ConnectRequest_Started, *hodeiv1.ConnectRequest_Logs, *hodeiv1.ConnectRequest_Finished:
			s.secondRedaction(ctx, m)
			r, n, err := toReport(m)
			if err != nil {
				return err
			}
			reports, lines = append(reports, r), append(lines, n)
		case *hodeiv1.ConnectRequest_Shutdown:
			msg := m.GetShutdown()
			c.mu.Lock()
			c.draining = true
			c.final = c.final || msg.Final
			c.mu.Unlock()
			if !msg.Final {
				// No replica claims for a draining worker.
				if err := s.store.MarkDraining(ctx, c.id); err != nil {
					return err
				}
				if err := s.store.PublishEvents(ctx, workerShutdownEvent(c, msg.Forced)); err != nil {
					return err
				}
			}
		case *hodeiv1.ConnectRequest_CertificateRequest:
			s.certificateRequest(ctx, c, m.GetCertificateRequest())
		case *hodeiv1.ConnectRequest_CertificateResult:
			s.certificateResult(ctx, c, m.GetCertificateResult())
		case *hodeiv1.ConnectRequest_Hello:
			return fmt.Errorf("hello sent twice")
		default:
			return fmt.Errorf("unknown message %T", m.Msg)
		}
	}
	if len(reports) == 0 {
		return nil
	}
	var begin time.Time
	if s.cfg.Tracer.Enabled() {
		begin = time.Now()
	}
	outcomes, err := s.commits.Apply(ctx, reports)
	if err != nil {
		return err
	}
	debug := s.log.Enabled(ctx, slog.LevelDebug)
	woken := map[string]bool{}
	wake := func(id string) {
		if !woken[id] {
			woken[id] = true
			s.logs.wake(id)
		}
	}
	for i, r := range reports {
		o := outcomes[i]
		switch {
		case r.Logs != nil:
			c.send(ackMsg(&hodeiv1.Ack{FencingToken: r.Token, LogSeq: r.Logs.Seq, Stale: o.Stale}))
			if !o.Stale {
				s.metrics.logLines.Add(float64(lines[i]))
				wake(r.JobID.String())
			}
		case r.Start:
			if o.StartDelay > 0 {
				s.metrics.toStarted.Observe(o.StartDelay.Seconds())
			}
			if o.Stale {
				c.send(ackMsg(&hodeiv1.Ack{FencingToken: r.Token, Stale: true}))
			}
		case r.Finish != nil:
			// Log followers learn the job's end from its final event
			// (Server.Run), on every replica.
			c.send(ackMsg(&hodeiv1.Ack{FencingToken: r.Token, Finished: true, Stale: o.Stale}))
			s.redact.forget(r.Token)
			if !begin.IsZero() && !o.Stale && !o.Outcome.Duplicate {
				s.traceResult(ctx, c, r, o.Outcome, begin)
			}
			if debug {
				s.log.Debug("attempt result", "job_id", r.JobID.String(), "worker_id", c.id, "fencing_token", r.Token,
					"exit_code", r.Finish.ExitCode, "state", string(o.Outcome.State), "stale", o.Stale, "duplicate", o.Outcome.Duplicate)
			}
		}
	}
	return nil
}

// toReport converts an agent's report about an attempt (started, logs or
// finished) into the store's form; n is its number of log lines. A report
// names its attempt by job id and fencing token.
func toReport(m *hodeiv1.ConnectRequest) (r store.Report, n int, err error) {
	switch msg := m.Msg.(type) {
	case *hodeiv1.ConnectRequest_Started:
		r = store.Report{Token: msg.Started.FencingToken, Start: true}
		r.JobID, err = parseJobID("started", msg.Started.JobId)
	case *hodeiv1.ConnectRequest_Logs:
		b := msg.Logs
		if r.JobID, err = parseJobID("logs", b.JobId); err != nil {
			return r, 0, err
		}
		data, err := proto.Marshal(&hodeiv1.LogBatch{Lines: b.Lines, Dropped: b.Dropped})
		if err != nil {
			return r, 0, err
		}
		r.Token, r.Logs, n = b.FencingToken, &store.LogBatchIn{JobID: r.JobID, Token: b.FencingToken, Seq: b.Seq, Lines: len(b.Lines), Data: data}, len(b.Lines)
	case *hodeiv1.ConnectRequest_Finished:
		f := msg.Finished
		r = store.Report{Token: f.FencingToken, Finish: &store.Result{ExitCode: int(f.ExitCode), Signal: storableText(f.Signal),
			Class: jobpb.ClassFromProto(f.FailureClass), Message: storableText(f.Message), LogBatches: f.LastLogSeq, LogLines: f.LinesSent, LogDropped: f.LinesDropped}}
		r.JobID, err = parseJobID("finished", f.JobId)
	default:
		err = fmt.Errorf("not an attempt report: %T", m.Msg)
	}
	return r, n, err
}

// parseJobID reads the job_id of an agent's message; field names the
// message in the error.
func parseJobID(field, id string) (uuid.UUID, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return u, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s.job_id: not a job id: %q", field, id))
	}
	return u, nil
}

func workerShutdownEvent(c *workerConn, forced bool) eventbus.Event {
	c.mu.Lock()
	n := len(c.running)
	c.mu.Unlock()
	if forced {
		return eventbus.New("worker", c.id, &hodeiv1.WorkerShutdownForced{WorkerId: c.id, KilledJobs: int32(n)})
	}
	return eventbus.New("worker", c.id, &hodeiv1.WorkerGracefulShutdown{WorkerId: c.id, RunningJobs: int32(n)})
}

// traceResult records the commit of an attempt's result, and the
// attempt's root span from its assignment to now.
func (s *Server) traceResult(ctx context.Context, c *workerConn, r store.Report, o store.Outcome, begin time.Time) {
	jobID, n := r.JobID.String(), int(o.Attempt)
	_, sp := s.cfg.Tracer.Span(tracing.Attempt(ctx, jobID, n), "commit result", begin, attribute.String("hodei.job_id", jobID), attribute.String("hodei.state", string(o.State)))
	sp.End()
	class := job.Result{ExitCode: r.Finish.ExitCode, Class: r.Finish.Class}.FailureClass()
	s.cfg.Tracer.Root(ctx, jobID, n, o.AssignedAt, time.Now(), attribute.String("hodei.worker_id", c.id), attribute.String("hodei.state", string(o.State)),
		attribute.String("hodei.outcome", outcome(class)), attribute.String("hodei.ended_by", "agent"))
}

// traceEnd records the root span of an attempt that ended without a
// result from its agent (store.OnAttemptEnd), from its assignment to its
// end, with what ended it (hodei.outcome, hodei.message).
func (s *Server) traceEnd(e store.AttemptEnd) {
	attrs := []attribute.KeyValue{attribute.String("hodei.state", string(e.State)), attribute.String("hodei.outcome", outcome(e.Class)),
		attribute.String("hodei.ended_by", "server"), attribute.String("hodei.message", e.Message)}
	if e.WorkerID != "" {
		attrs = append(attrs, attribute.String("hodei.worker_id", e.WorkerID))
	}
	s.cfg.Tracer.Root(context.Background(), e.JobID, int(e.Attempt), e.Since, e.At, attrs...)
}

// outcome names how an attempt ended: its failure class, or succeeded.
func outcome(c job.FailureClass) string {
	if c == job.FailureNone {
		return "succeeded"
	}
	return string(c)
}
