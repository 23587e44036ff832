package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// historyChunk is the number of finished jobs loadHistory inserts per
// statement.
const historyChunk = 250_000

// historySpan is how far back the loaded history reaches: inside the
// default job retention (30 days), so that a run does not measure the
// retention duty deleting it.
const historySpan = 29 * 24 * time.Hour

// expiredAge is how much older an expired history is (HistoryExpired):
// it then spans 31 to 60 days ago, past the default job retention, and
// the retention duty deletes it while the run is measured.
const expiredAge = 31 * 24 * time.Hour

// loadHistory inserts n finished jobs into the migrated database at url,
// as months of use leave them: each succeeded on its first attempt, with
// one log batch and two events (JobCreated, JobCompleted, in batches of
// 500 jobs as group commit writes them), spread over the last 29 days.
// It runs before the platform starts, so the history's events are behind
// every subscriber's cursor. It ends with VACUUM ANALYZE and a checkpoint,
// as a database that lived that long has been vacuumed.
func loadHistory(ctx context.Context, url string, n int, expired bool, progress io.Writer) error {
	if n <= 0 {
		return nil
	}
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	logData, err := proto.Marshal(&hodeiv1.LogBatch{Lines: []*hodeiv1.LogLine{{Stream: hodeiv1.LogStream_LOG_STREAM_STDOUT, Data: []byte("done\n"), Time: timestamppb.Now()}}})
	if err != nil {
		return err
	}
	start := time.Now()
	base := start.Add(-historySpan)
	if expired {
		base = base.Add(-expiredAge)
	}
	step := historySpan / time.Duration(n)
	for lo := 0; lo < n; lo += historyChunk {
		hi := min(lo+historyChunk, n) - 1
		if _, err := c.Exec(ctx, historySQL, lo, hi, base, step.Microseconds(), logData); err != nil {
			return fmt.Errorf("load history: %w", err)
		}
		fmt.Fprintf(progress, "history: %d of %d jobs loaded (%.0fs)\n", hi+1, n, time.Since(start).Seconds())
	}
	for _, q := range []string{"VACUUM (ANALYZE) jobs, job_logs, event_batches", "CHECKPOINT"} {
		if _, err := c.Exec(ctx, q); err != nil {
			return fmt.Errorf("load history: %s: %w", q, err)
		}
	}
	fmt.Fprintf(progress, "history: %d jobs loaded, vacuumed and checkpointed in %.0fs\n", n, time.Since(start).Seconds())
	return nil
}

// historySQL inserts the jobs $1..$2 of the history: job i finished at
// $3 + i * $4 microseconds, with a UUIDv7 id of that time (so the
// history sorts before every job of the run), the log batch $5 and its
// events.
const historySQL = `
WITH g AS MATERIALIZED (
    SELECT i, ts, (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7' || substr(md5(i::text), 1, 3)
            || '8' || substr(md5(i::text), 4, 15))::uuid AS id
    FROM (SELECT i, $3::timestamptz + make_interval(secs => i * $4::bigint / 1e6) AS ts FROM generate_series($1::int, $2::int) i) s
), j AS (
    INSERT INTO jobs (id, spec, state, attempt, max_attempts, exit_code, created_at, updated_at, finished_at, log_bytes,
                      attempt_token, attempt_worker_id, attempt_state, attempt_assigned_at, attempt_started_at, attempt_finished_at, attempt_exit_code)
    SELECT id, '{"command": ["true"]}', 'succeeded', 1, 3, 0, ts, ts, ts, length($5::bytea),
           nextval('fencing_token_seq'), '01a24356-511d-791e-952b-dc0948bdae37', 'succeeded', ts, ts, ts, 0
    FROM g
), l AS (
    INSERT INTO job_logs (job_id, attempt, seq, lines, bytes, data, created_at)
    SELECT id, 1, 1, 1, length($5::bytea), $5::bytea, ts FROM g
)
INSERT INTO event_batches (created_at, types, aggregate_kinds, aggregate_ids, correlation_ids, payloads)
SELECT max(g.ts), array_agg(e.type ORDER BY g.i, e.k), array_agg('job'::text ORDER BY g.i, e.k), array_agg(g.id::text ORDER BY g.i, e.k),
       array_agg(''::text ORDER BY g.i, e.k), array_agg('\x'::bytea ORDER BY g.i, e.k)
FROM g CROSS JOIN (VALUES (1, 'JobCreated'), (2, 'JobCompleted')) e (k, type)
GROUP BY g.i / 500`

// snapshotHolder is a REPEATABLE READ transaction that has taken its
// snapshot, as a long report query holds one: while it is open, no row
// version deleted after it can be vacuumed away.
type snapshotHolder struct {
	conn *pgx.Conn
	tx   pgx.Tx
}

func holdSnapshot(ctx context.Context, url string) (*snapshotHolder, error) {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		c.Close(ctx) //nolint:errcheck
		return nil, err
	}
	var n int64
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM (SELECT 1 FROM jobs LIMIT 1) j").Scan(&n); err != nil {
		c.Close(ctx) //nolint:errcheck
		return nil, err
	}
	return &snapshotHolder{conn: c, tx: tx}, nil
}

func (h *snapshotHolder) release() {
	ctx := context.Background()
	_ = h.tx.Rollback(ctx)
	_ = h.conn.Close(ctx)
}

// runShape is what a run reports besides its rate: the rate of each
// tenth of the jobs, the process's memory and the database's sizes.
type runShape struct {
	tenths              []float64 // jobs/s of each tenth of the run's jobs, in finishing order
	rssMiB              float64   // resident memory of this process (server, agents and client) at the end
	tablesMiB, indexMiB float64   // jobs, job_logs and event_batches with their TOAST; their indexes
	pages               pageTimes
	historyDeleted      int // jobs of an expired history deleted by the end of the run
}

// measureShape reads the finish times of the run's jobs (created at or
// after submitted, through the creation-time index) counted from start,
// and the sizes.
func measureShape(ctx context.Context, db *pgxpool.Pool, submitted, start time.Time, n int) (runShape, error) {
	var s runShape
	var marks []time.Time
	err := db.QueryRow(ctx, `SELECT percentile_disc(ARRAY[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]) WITHIN GROUP (ORDER BY finished_at)
		FROM jobs WHERE created_at >= $1`, submitted).Scan(&marks)
	if err != nil {
		return s, fmt.Errorf("tenths: %w", err)
	}
	prev := start
	for _, m := range marks {
		s.tenths = append(s.tenths, float64(n)/10/max(m.Sub(prev).Seconds(), 1e-6))
		prev = m
	}
	var tables, indexes int64
	err = db.QueryRow(ctx, `SELECT sum(pg_table_size(c)), sum(pg_indexes_size(c)) FROM unnest(ARRAY['jobs', 'job_logs', 'event_batches']::regclass[]) c`).Scan(&tables, &indexes)
	if err != nil {
		return s, fmt.Errorf("sizes: %w", err)
	}
	s.tablesMiB, s.indexMiB = float64(tables)/(1<<20), float64(indexes)/(1<<20)
	s.rssMiB = selfRSSMiB()
	return s, nil
}

// minTenth is the slowest tenth's rate over the whole run's rate.
func (s runShape) minTenth(rate float64) float64 {
	if len(s.tenths) == 0 || rate == 0 {
		return 0
	}
	m := s.tenths[0]
	for _, t := range s.tenths {
		m = min(m, t)
	}
	return m / rate
}

func (s runShape) tenthsText() string {
	parts := make([]string, len(s.tenths))
	for i, t := range s.tenths {
		parts[i] = strconv.FormatFloat(t, 'f', 0, 64)
	}
	return strings.Join(parts, "/")
}

// selfRSSMiB is this process's resident set size (VmRSS), 0 if unknown.
func selfRSSMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// pageTimes is how long the API takes, at the end of a run, for what a
// person looks at first: the first page of ListJobs (all jobs, and only
// the failed ones), and one job with its log (GetJob, then GetJobLogs of
// the oldest job still stored, created at or after from). Each is the median of 15 calls.
type pageTimes struct {
	list, listFailed, job time.Duration
}

func measurePages(ctx context.Context, rig *benchRig, from time.Time) (pageTimes, error) {
	var p pageTimes
	var oldest string
	if err := rig.db.QueryRow(ctx, "SELECT id::text FROM jobs WHERE created_at >= $1 ORDER BY id LIMIT 1", from).Scan(&oldest); err != nil {
		return p, err
	}
	timeIt := func(f func() error) (time.Duration, error) {
		var ds []time.Duration
		for range 15 {
			start := time.Now()
			if err := f(); err != nil {
				return 0, err
			}
			ds = append(ds, time.Since(start))
		}
		return median(ds), nil
	}
	var err error
	if p.list, err = timeIt(func() error {
		_, err := rig.jobs.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{PageSize: 50}))
		return err
	}); err != nil {
		return p, fmt.Errorf("list jobs: %w", err)
	}
	if p.listFailed, err = timeIt(func() error {
		_, err := rig.jobs.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{PageSize: 50, States: []hodeiv1.JobState{hodeiv1.JobState_JOB_STATE_FAILED}}))
		return err
	}); err != nil {
		return p, fmt.Errorf("list failed jobs: %w", err)
	}
	if p.job, err = timeIt(func() error {
		if _, err := rig.jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: oldest})); err != nil {
			return err
		}
		s, err := rig.jobs.GetJobLogs(ctx, connect.NewRequest(&hodeiv1.GetJobLogsRequest{Id: oldest}))
		if err != nil {
			return err
		}
		defer s.Close()
		for s.Receive() {
		}
		return s.Err()
	}); err != nil {
		return p, fmt.Errorf("job page: %w", err)
	}
	return p, nil
}
