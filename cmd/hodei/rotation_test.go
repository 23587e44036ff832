package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// rotation is a certificate rotation scenario: a server whose
// certificates live ttl and are renewed renewBefore their end, checked
// every check, runs jobs for run while every certificate rotates.
type rotation struct {
	ttl, renewBefore, check, run time.Duration
}

// TestCertificatesRotateUnderLoad: with short-lived certificates, every
// agent and the server rotate several times while jobs run; no job fails,
// no worker disconnects, and a renewal spoiled on purpose (the agent is
// sent a certificate for another identity) is refused, the old
// certificate kept, and a later renewal succeeds.
func TestCertificatesRotateUnderLoad(t *testing.T) {
	t.Parallel()
	rotation{ttl: 20 * time.Second, renewBefore: 15 * time.Second, check: time.Second, run: 25 * time.Second}.test(t)
}

func (r rotation) test(t *testing.T) {
	dbURL, addr := storetest.URL(t), freeAddr(t)
	sp := spawnPlatform(t, []string{"HODEI_DATABASE_URL=" + dbURL, "HODEI_TEST_BAD_RENEWALS=1"}, "server", "--listen", addr,
		"--max-workers", "3", "--idle-timeout", "10m", "--cert-ttl", r.ttl.String(), "--cert-renew-before", r.renewBefore.String(),
		"--cert-check-interval", r.check.String())
	eventually(t, 20*time.Second, "server listening", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	st := openStore(t, dbURL)
	c := jobClient(addr)
	// One job spans every rotation; short ones keep coming meanwhile.
	long := submit(t, c, &hodeiv1.JobSpec{Command: []string{"sleep", fmt.Sprint(r.run.Seconds())}})
	var ids []string
	for end := time.Now().Add(r.run); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		ids = append(ids, submit(t, c, &hodeiv1.JobSpec{Command: []string{"true"}}))
	}
	ids = append(ids, long)
	for _, id := range ids {
		j := waitJob(t, c, id, r.run+30*time.Second, isFinal)
		if j.State != hodeiv1.JobState_JOB_STATE_SUCCEEDED || len(j.Attempts) != 1 {
			t.Errorf("job %s ended %v after %d attempts, want succeeded at its first", id, j.State, len(j.Attempts))
		}
	}
	workers := queryAll(t, st, "SELECT id::text FROM workers WHERE state = 'connected'")
	if len(workers) == 0 {
		t.Fatal("no worker connected")
	}
	// A worker renews every ttl-renewBefore; one the autoscaler started
	// late in the run may not have lived through the spoiled renewal and
	// two more: its rotations are not counted. The one that ran the long
	// job lived through the whole run.
	lived, full := 3*(r.ttl-r.renewBefore)+2*r.check, 0
	for _, w := range workers {
		types := eventTypes(t, st, w)
		if slices.Contains(types, "WorkerDisconnected") || slices.Contains(types, "WorkerReconnected") {
			t.Errorf("worker %s: events %v, want no disconnection", w, types)
		}
		age := time.Duration(queryOne[float64](t, st, "SELECT extract(epoch FROM clock_timestamp() - min(created_at))::float8 FROM events WHERE aggregate_id = $1", w) * float64(time.Second))
		if age < lived {
			t.Logf("worker %s connected %s ago, under %s: rotations not counted (events %v)", w, age.Round(time.Millisecond), lived, types)
			continue
		}
		full++
		expiring, failed, rotated := slices.Index(types, "CertificateExpiring"), slices.Index(types, "RotationFailed"), slices.Index(types, "CertificateRotated")
		if expiring < 0 || failed < expiring || rotated < failed || count(types, "CertificateRotated") < 2 {
			t.Errorf("worker %s: events %v, want CertificateExpiring, RotationFailed (the spoiled renewal), then CertificateRotated at least twice", w, types)
		}
	}
	if full == 0 {
		t.Errorf("no worker lived %s: the run is too short to test rotations", lived)
	}
	if n := queryOne[int64](t, st, "SELECT count(*) FROM events WHERE type = 'CertificateRotated' AND aggregate_id LIKE 'server/%'"); n < 2 {
		t.Errorf("server certificate rotated %d times, want at least 2", n)
	}
	if n := metricValue(t, addr, `hodei_certificate_rotations_total{kind="worker",result="success"}`); n < 2 {
		t.Errorf("worker rotations metric = %v, want at least 2", n)
	}
	if !strings.Contains(sp.logs.String(), "renewed certificate refused; keeping the current one") {
		t.Error("no agent refused the spoiled certificate")
	}
	if _, err := c.GetJob(context.Background(), connect.NewRequest(&hodeiv1.GetJobRequest{Id: long})); err != nil {
		t.Errorf("the API after the rotations: %v", err)
	}
}

func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

// queryAll runs a query of one text column.
func queryAll(t *testing.T, st *store.Store, sql string) []string {
	t.Helper()
	rows, err := st.SQLForTests().Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
