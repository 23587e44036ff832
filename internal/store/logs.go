package store

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// LogRecord is one stored batch.
type LogRecord struct {
	Attempt int
	Seq     int64
	Data    []byte
	Time    time.Time
}

// LogPos is the place of a stored batch in a job's log: batches are in
// (attempt, seq) order.
type LogPos struct {
	Attempt int
	Seq     int64
}

// LogEnd is after every batch: the bound of a read to the end of a log.
var LogEnd = LogPos{Attempt: math.MaxInt32, Seq: math.MaxInt64}

// ReadLogs returns stored batches after after and before before, in order.
func (s *Store) ReadLogs(ctx context.Context, jobID string, onlyAttempt int, after, before LogPos, limit int) ([]LogRecord, error) {
	uid, err := uuid.Parse(jobID)
	if err != nil {
		return nil, &job.FieldError{Field: "id", Rule: "must be a job id (UUID)"}
	}
	rows, err := s.q.ReadLogs(ctx, db.ReadLogsParams{JobID: uid, OnlyAttempt: int32(onlyAttempt), AfterAttempt: int32(after.Attempt), AfterSeq: after.Seq,
		BeforeAttempt: int32(before.Attempt), BeforeSeq: before.Seq, MaxRows: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("read logs: %w", err)
	}
	out := make([]LogRecord, len(rows))
	for i, r := range rows {
		out[i] = LogRecord{Attempt: int(r.Attempt), Seq: r.Seq, Data: r.Data, Time: r.CreatedAt}
	}
	return out, nil
}

// LogTailStart returns the position of the first batch of the shortest
// tail of a job's log (one attempt, or all with 0) before before that
// holds at least minBytes; ok is false when that tail is all the log
// before before.
func (s *Store) LogTailStart(ctx context.Context, jobID string, onlyAttempt int, before LogPos, minBytes int64) (attempt int, seq int64, ok bool, err error) {
	uid, err := uuid.Parse(jobID)
	if err != nil {
		return 0, 0, false, &job.FieldError{Field: "id", Rule: "must be a job id (UUID)"}
	}
	rows, err := s.q.LogTailStart(ctx, db.LogTailStartParams{JobID: uid, OnlyAttempt: int32(onlyAttempt), MinBytes: minBytes,
		BeforeAttempt: int32(before.Attempt), BeforeSeq: before.Seq})
	if err != nil {
		return 0, 0, false, fmt.Errorf("log tail: %w", err)
	}
	if len(rows) == 0 || !rows[0].Earlier {
		return 0, 0, false, nil
	}
	return int(rows[0].Attempt), rows[0].Seq, true, nil
}

// LogBatchIn is one log batch to store.
type LogBatchIn struct {
	JobID uuid.UUID
	Token int64
	Seq   int64
	Lines int
	Data  []byte
}

// AppendLogBatches stores many batches in one statement and commit (group
// commit). Batches of attempts that are no longer their job's latest are
// not stored; their tokens are returned as stale. Batches stored before
// are accepted again without change.
func (s *Store) AppendLogBatches(ctx context.Context, in []LogBatchIn) (stale map[int64]bool, err error) {
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		var jobs map[string]bool
		if stale, jobs, err = s.appendLogBatches(ctx, q, in); err != nil {
			return err
		}
		return notifyLogs(ctx, q, jobs)
	})
	return stale, err
}

// LogsChannel is the NOTIFY channel that announces new log output, with
// the job id as payload: a hint for log followers on every replica. The
// end of a job is not announced here: followers learn it from the job's
// final event (one NOTIFY per finished job cost every replica's listener
// a message per job).
const LogsChannel = "hodei_logs"

func notifyLogs(ctx context.Context, q *db.Queries, jobs map[string]bool) error {
	if len(jobs) == 0 {
		return nil
	}
	ids := make([]string, 0, len(jobs))
	for id := range jobs {
		ids = append(ids, id)
	}
	return q.NotifyMany(ctx, db.NotifyManyParams{Channel: LogsChannel, Payloads: ids})
}

func (s *Store) appendLogBatches(ctx context.Context, q *db.Queries, in []LogBatchIn) (stale map[int64]bool, jobs map[string]bool, err error) {
	in, jobs, err = s.applyLogCap(ctx, q, in)
	if err != nil {
		return nil, nil, err
	}
	p := db.InsertLogBatchesParams{Now: s.now()}
	for _, b := range in {
		p.JobIds = append(p.JobIds, b.JobID)
		p.Tokens = append(p.Tokens, b.Token)
		p.Seqs = append(p.Seqs, b.Seq)
		p.Lines = append(p.Lines, int32(b.Lines))
		p.Sizes = append(p.Sizes, int32(len(b.Data)))
		p.Datas = append(p.Datas, b.Data)
	}
	rows, err := q.InsertLogBatches(ctx, p)
	if err != nil {
		return nil, nil, fmt.Errorf("append logs: %w", err)
	}
	if len(rows) == len(in) {
		return nil, jobs, nil
	}
	// Some were duplicates or stale: tell them apart per token.
	checked := map[int64]bool{}
	for _, b := range in {
		if _, ok := checked[b.Token]; ok {
			continue
		}
		latest, err := q.AttemptIsLatest(ctx, db.AttemptIsLatestParams{JobID: b.JobID, Token: b.Token})
		if err != nil {
			return nil, nil, fmt.Errorf("append logs: %w", err)
		}
		checked[b.Token] = latest
		if !latest {
			if stale == nil {
				stale = map[int64]bool{}
			}
			stale[b.Token] = true
			s.staleReports.Add(1)
		}
	}
	return stale, jobs, nil
}

// TruncationMarker is the system line stored in place of a job's output
// past its log size cap.
func TruncationMarker(limit int64) string {
	return fmt.Sprintf("hodei: log truncated: the job's output exceeded the limit of %d bytes; later output is discarded", limit)
}

// applyLogCap enforces the per-job log size cap: batches that would take
// a job past it are replaced, once, by a truncation marker; later ones are
// dropped (and still acknowledged). The jobs' byte counts are updated in
// the same transaction.
func (s *Store) applyLogCap(ctx context.Context, q *db.Queries, in []LogBatchIn) ([]LogBatchIn, map[string]bool, error) {
	ids := make([]uuid.UUID, len(in))
	for i, b := range in {
		ids[i] = b.JobID
	}
	rows, err := q.LogBudget(ctx, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("log budget: %w", err)
	}
	type budget struct {
		job       uuid.UUID
		bytes     int64
		truncated bool
		changed   bool
	}
	byJob := map[uuid.UUID]*budget{}
	byToken := map[int64]*budget{}
	for _, r := range rows {
		b := byJob[r.JobID]
		if b == nil {
			b = &budget{job: r.JobID, bytes: r.LogBytes, truncated: r.LogTruncated}
			byJob[r.JobID] = b
		}
		byToken[r.Token] = b
	}
	out := in[:0:0]
	for _, b := range in {
		bud := byToken[b.Token]
		if bud == nil || bud.job != b.JobID { // not the job's latest attempt: the insert reports it stale
			out = append(out, b)
			continue
		}
		switch {
		case bud.truncated:
			continue
		case bud.bytes+int64(len(b.Data)) > s.logCap:
			marker, err := proto.Marshal(&hodeiv1.LogBatch{Lines: []*hodeiv1.LogLine{{Stream: hodeiv1.LogStream_LOG_STREAM_SYSTEM,
				Data: []byte(TruncationMarker(s.logCap)), Time: timestamppb.New(s.now())}}})
			if err != nil {
				return nil, nil, err
			}
			b.Data, b.Lines = marker, 1
			bud.truncated = true
		}
		bud.bytes += int64(len(b.Data))
		bud.changed = true
		out = append(out, b)
	}
	var p db.SetLogBudgetParams
	jobs := map[string]bool{}
	for _, b := range byJob {
		jobs[b.job.String()] = true
		if b.changed {
			p.Ids = append(p.Ids, b.job)
			p.Bytes = append(p.Bytes, b.bytes)
			p.Truncated = append(p.Truncated, b.truncated)
		}
	}
	if len(p.Ids) > 0 {
		if err := q.SetLogBudget(ctx, p); err != nil {
			return nil, nil, fmt.Errorf("log budget: %w", err)
		}
	}
	return out, jobs, nil
}
