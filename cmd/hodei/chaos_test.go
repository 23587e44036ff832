//go:build chaos

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/store"
)

// The chaos suite (build tag chaos, `make test-chaos`): each scenario runs
// the real binary, real PostgreSQL and real agents, breaks one of them
// under load, and checks with a ledger that nothing was lost and that no
// two attempts of one job ever ran at the same time.
//
// Every job of a scenario runs the ledger's script, which appends "start
// JOB ATTEMPT NANOS" when it begins and "end JOB ATTEMPT NANOS" when it is
// done to the scenario's ledger file. An attempt whose process was killed
// has no end line; one whose process outlived its worker writes its end
// line late, and its interval then overlaps the next attempt's. Each
// attempt also leaves its pid (and the process's start time, against pid
// reuse) while it runs, and a later attempt that finds an earlier one's
// process still alive when it starts appends "alive JOB ATTEMPT NANOS":
// that catches an old attempt killed only after the new one began.

// ledgerScript is the jobs' script; $1 is the ledger's directory, $2 the
// seconds to sleep.
const ledgerScript = `d=$1; me=$d/$HODEI_JOB_ID.$HODEI_ATTEMPT.pid
started() { s=$(cat /proc/$1/stat 2>/dev/null) || return 1; set -- ${s##*) }; [ "$1" != Z ] && echo "${20}"; }
echo "$$ $(started $$)" > $me
echo start $HODEI_JOB_ID $HODEI_ATTEMPT $(date +%s%N) >> $d/ledger
for f in $d/$HODEI_JOB_ID.*.pid; do
  [ "$f" = "$me" ] && continue
  read pid at < "$f" 2>/dev/null || continue
  [ "$(started $pid)" = "$at" ] && echo alive $HODEI_JOB_ID $HODEI_ATTEMPT $(date +%s%N) >> $d/ledger
done
sleep $2
rm -f $me
echo end $HODEI_JOB_ID $HODEI_ATTEMPT $(date +%s%N) >> $d/ledger
`

// ledger is a scenario's ledger file and the jobs submitted to it.
type ledger struct {
	name string
	dir  string
	mu   sync.Mutex
	ids  []string
}

func newLedger(t *testing.T, name string) *ledger {
	t.Helper()
	l := &ledger{name: name, dir: t.TempDir()}
	if err := os.WriteFile(filepath.Join(l.dir, "job.sh"), []byte(ledgerScript), 0o644); err != nil {
		t.Fatal(err)
	}
	return l
}

// spec is a job that sleeps for sleep between its ledger lines, retried
// up to attempts times (0: the default policy) with a short backoff.
func (l *ledger) spec(sleep time.Duration, attempts int) *hodeiv1.JobSpec {
	s := &hodeiv1.JobSpec{Command: []string{"sh", filepath.Join(l.dir, "job.sh"), l.dir, fmt.Sprintf("%.3f", sleep.Seconds())}}
	if attempts > 0 {
		s.Retry = &hodeiv1.RetryPolicy{MaxAttempts: int32(attempts), InitialBackoff: durationpb.New(100 * time.Millisecond)}
	}
	return s
}

// mixedSleep is the load's job length: mostly short (0-200 ms), one in
// ten up to 2 s.
func mixedSleep(i int) time.Duration {
	if i%10 == 0 {
		return time.Duration(rand.N(2000)) * time.Millisecond
	}
	return time.Duration(rand.N(200)) * time.Millisecond
}

// submit submits spec with an idempotency key unique to the ledger and
// n, retrying until it is accepted (the server may be down meanwhile), and
// records the job.
func (l *ledger) submit(t *testing.T, c hodeiv1connect.JobServiceClient, n int, spec *hodeiv1.JobSpec) string {
	t.Helper()
	spec.IdempotencyKey = fmt.Sprintf("%s-%d", l.name, n)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := c.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
		cancel()
		if err == nil {
			l.mu.Lock()
			l.ids = append(l.ids, r.Msg.Job.Id)
			l.mu.Unlock()
			return r.Msg.Job.Id
		}
		if time.Now().After(deadline) {
			t.Errorf("submit job %d: %v", n, err) // not Fatal: load submits from other goroutines
			return ""
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// load submits jobs jobs of mixed length (attempts as in spec) from four
// clients, round robin over cs, and returns once all are accepted.
func (l *ledger) load(t *testing.T, cs []hodeiv1connect.JobServiceClient, jobs, attempts int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 4 {
		c := cs[w%len(cs)]
		wg.Go(func() {
			for i := w; i < jobs; i += 4 {
				l.submit(t, c, i, l.spec(mixedSleep(i), attempts))
			}
		})
	}
	wg.Wait()
}

// interval is one attempt's run as the ledger saw it; end is 0 when the
// attempt never wrote its end line.
type interval struct {
	attempt    int
	start, end int64
}

// read parses the ledger: the runs of each job, by job id (one interval
// per start line, so that an attempt run twice shows as two), and what
// the ledger refuses outright: attempts that found an earlier one's
// process alive (alive), and attempts run more than once or ended without
// a start (odd).
func (l *ledger) read(t *testing.T) (runs map[string][]interval, alive, odd []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, "ledger"))
	if os.IsNotExist(err) {
		return nil, nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	runs = map[string][]interval{}
	// Only whole lines: a job may have created the file, or be writing
	// its line, as it is read; the rest is read the next time.
	text := string(b)
	text = text[:strings.LastIndexByte(text, '\n')+1]
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if line == "" {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 4 {
			t.Fatalf("ledger line %q", line)
		}
		attempt, _ := strconv.Atoi(fs[2])
		at, _ := strconv.ParseInt(fs[3], 10, 64)
		id := fs[1]
		seen := slices.IndexFunc(runs[id], func(iv interval) bool { return iv.attempt == attempt })
		open := slices.IndexFunc(runs[id], func(iv interval) bool { return iv.attempt == attempt && iv.end == 0 })
		switch fs[0] {
		case "alive":
			alive = append(alive, fmt.Sprintf("job %s attempt %d started while an earlier attempt's process was alive", id, attempt))
		case "start":
			if seen >= 0 {
				odd = append(odd, fmt.Sprintf("job %s attempt %d started more than once", id, attempt))
			}
			runs[id] = append(runs[id], interval{attempt: attempt, start: at})
		default:
			if open < 0 {
				odd = append(odd, fmt.Sprintf("job %s attempt %d ended without a start", id, attempt))
				continue
			}
			runs[id][open].end = at
		}
	}
	return runs, alive, odd
}

// overlaps counts the pairs of attempts of one job that ran at the same
// time, and reports each.
func overlaps(t *testing.T, runs map[string][]interval) int {
	t.Helper()
	n := 0
	for id, ivs := range runs {
		for i, a := range ivs {
			for _, b := range ivs[i+1:] {
				first, second := a, b
				if b.start < a.start {
					first, second = b, a
				}
				// An attempt without an end line was killed: the ledger
				// cannot tell when, and counts it as over.
				if first.end != 0 && first.end > second.start {
					t.Errorf("job %s: attempt %d ran until %d, after attempt %d began at %d", id, first.attempt, first.end, second.attempt, second.start)
					n++
				}
			}
		}
	}
	return n
}

// check waits until every job of the ledger is final (reading st), then
// for settle (so that processes that outlived their worker write their
// end lines), and checks that every job succeeded, reached its final state
// once (a late result of a replaced attempt would add an event), and
// finished its last attempt, with no overlapping attempts. It
// prints the scenario's summary line.
func (l *ledger) check(t *testing.T, st *store.Store, timeout, settle time.Duration, recovery time.Duration) {
	t.Helper()
	ctx := context.Background()
	eventually(t, timeout, "every job final", func() bool {
		var open int
		err := st.SQLForTests().QueryRow(ctx, "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND finished_at IS NULL", l.ids).Scan(&open)
		return err == nil && open == 0
	})
	time.Sleep(settle)
	rows, err := st.SQLForTests().Query(ctx, `SELECT j.id, j.state, j.attempt,
		(SELECT count(*) FROM events e WHERE e.aggregate_id = j.id::text AND e.type IN ('JobCompleted', 'JobCancelled')),
		(SELECT count(*) FROM events e WHERE e.aggregate_id = j.id::text AND e.type = 'JobFailed')
		FROM jobs j WHERE j.id = ANY($1::uuid[])`, l.ids)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	runs, alive, odd := l.read(t)
	lost, seen := 0, 0
	for rows.Next() {
		var id, state string
		var attempt, finals, failed int
		if err := rows.Scan(&id, &state, &attempt, &finals, &failed); err != nil {
			t.Fatal(err)
		}
		seen++
		last := slices.IndexFunc(runs[id], func(iv interval) bool { return iv.attempt == attempt && iv.end != 0 })
		// One final state: the last attempt's success, after one failure
		// event per earlier attempt.
		if state != "succeeded" || finals != 1 || failed != attempt-1 || last < 0 {
			if lost < 10 {
				t.Errorf("job %s: state %s after attempt %d, %d final and %d failure events, last attempt ended: %v; want succeeded once",
					id, state, attempt, finals, failed, last >= 0)
			}
			lost++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	lost += len(l.ids) - seen
	for _, a := range append(alive, odd...) {
		t.Error(a)
	}
	ov := overlaps(t, runs) + len(alive)
	fmt.Printf("chaos name=%s jobs=%d lost=%d overlaps=%d recovery_ms=%d\n", l.name, len(l.ids), lost, ov, recovery.Milliseconds())
	if lost > 0 || ov > 0 {
		t.Errorf("%d jobs lost, %d overlapping attempts", lost, ov)
	}
}

// probe submits a job that runs ahead of the load (the highest
// priority) and returns when it started: how soon the platform dispatches
// again.
func (l *ledger) probe(t *testing.T, c hodeiv1connect.JobServiceClient, n int, timeout time.Duration) time.Time {
	t.Helper()
	spec := l.spec(0, 5)
	spec.Priority = 1000
	return l.waitStarted(t, l.submit(t, c, n, spec), timeout)
}

// waitStarted waits until job id has a start line in the ledger and
// returns when it was written.
func (l *ledger) waitStarted(t *testing.T, id string, timeout time.Duration) time.Time {
	t.Helper()
	var at int64
	eventually(t, timeout, "job "+id+" started", func() bool {
		if runs, _, _ := l.read(t); len(runs[id]) > 0 {
			ivs := runs[id]
			at = ivs[0].start
			return true
		}
		return false
	})
	return time.Unix(0, at)
}
