package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// leakShapes are the secret values of the leak table.
var leakShapes = []string{
	"plain-Pa55word",
	`with spaces and "double" 'single' quotes`,
	"ünïcødé-秘密-🔑",
	"line one of the key\nline two of the key\nline three",
	`{"user":"svc","token":"t<0k&n>"}`,
	"Ω¡", // 4 bytes
	strings.Repeat("4KiB-secret-", 342)[:4096],
}

// leakOutputs are the ways a job prints $S; want is the job's final state.
var leakOutputs = []struct {
	name, script string
	want         hodeiv1.JobState
}{
	{"echo", `echo "$S"`, hodeiv1.JobState_JOB_STATE_SUCCEEDED},
	{"printf, no newline", `printf %s "$S"`, hodeiv1.JobState_JOB_STATE_SUCCEEDED},
	{"two writes with a sleep", `printf %s "$S" | head -c 2; sleep 0.3; printf %s "$S" | tail -c +3; echo`, hodeiv1.JobState_JOB_STATE_SUCCEEDED},
	{"base64", `printf %s "$S" | base64 -w0; echo; printf x%s "$S" | base64 -w0; echo; printf xy%s "$S" | base64 -w0`, hodeiv1.JobState_JOB_STATE_SUCCEEDED},
	{"jq @uri", `printf %s "$S" | jq -R @uri; printf %s "$S" | jq -Rs @uri`, hodeiv1.JobState_JOB_STATE_SUCCEEDED},
	{"json escaped", `printf %s "$S" | jq -Rs .; printf %s "$S" | jq -Rs '{v: .}' -c`, hodeiv1.JobState_JOB_STATE_SUCCEEDED},
	{"stderr", `echo "$S" >&2`, hodeiv1.JobState_JOB_STATE_SUCCEEDED},
	{"inside a 1 MiB line", `head -c 524288 /dev/zero | tr '\0' a; printf %s "$S"; head -c 524288 /dev/zero | tr '\0' b; echo`, hodeiv1.JobState_JOB_STATE_SUCCEEDED},
	{"then fails", `echo "$S"; echo "error: $S" >&2; exit 3`, hodeiv1.JobState_JOB_STATE_FAILED},
	{"then times out", `echo "$S"; exec sleep 60`, hodeiv1.JobState_JOB_STATE_TIMED_OUT},
}

// needles are the forms of v the platform must not keep, computed here
// apart from the redactor: v, each line, base64 at the three alignments
// in both alphabets (the characters that depend on v alone), percent,
// query and JSON encoding, of v and of each line.
func needles(v string) []string {
	var out []string
	add := func(s string) {
		if len(s) >= 4 {
			out = append(out, s)
		}
	}
	parts := []string{v}
	if strings.Contains(v, "\n") {
		parts = append(parts, strings.Split(v, "\n")...)
	}
	for _, p := range parts {
		add(p)
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			for k := range 3 {
				full := enc.EncodeToString([]byte(strings.Repeat("\x00", k) + p))
				from, to := (8*k+5)/6, 8*(k+len(p))/6
				add(full[from:to])
			}
		}
		add(strings.ReplaceAll(url.QueryEscape(p), "+", "%20"))
		add(strings.NewReplacer("+", "%20", "%27", "'", "%21", "!", "%28", "(", "%29", ")", "%2A", "*").Replace(url.QueryEscape(p)))
		add(url.QueryEscape(p))
		j, _ := json.Marshal(p)
		add(strings.Trim(string(j), `"`))
	}
	return out
}

// TestSecretsLeakNowhere runs every secret shape through every output
// shape on hodei dev with a data dir and process workers, then looks for
// every form of every value in the stored logs, every event, every row of
// every table (raw COPY), the server's and agents' log, job get and job
// logs, and every file of the data dir: the PostgreSQL cluster, WAL
// included.
func TestSecretsLeakNowhere(t *testing.T) {
	t.Parallel()
	leakTable(t, false, "--max-workers", "4")
}

// TestSecretsLeakNowhereInDocker is the same table on Docker workers,
// whose exec shim is the binary mounted into their containers; the
// worker image is busybox alone, so the outputs that need jq are left out.
func TestSecretsLeakNowhereInDocker(t *testing.T) {
	needDocker(t)
	t.Parallel()
	leakTable(t, true, "--max-workers", "0", "--docker-max-workers", "3", "--docker-binary", hodeiBin)
}

func leakTable(t *testing.T, withoutJQ bool, workerArgs ...string) {
	data := filepath.Join(searchableDir(t), "pg")
	addr := freeAddr(t)
	dev := spawnPlatform(t, []string{"HODEI_LOG_LEVEL=debug"}, append([]string{"dev", "--listen", addr, "--data-dir", data}, workerArgs...)...)
	dev.waitLog(t, 60*time.Second, "Hodei is running on "+addr)
	p := serverProc{addr: addr}
	if _, err := os.Stat(filepath.Join(data, devSecretKeyFile)); err != nil {
		t.Fatalf("hodei dev made no key file: %v", err)
	}
	for i, v := range leakShapes {
		if r := p.hodeiIn(t, v+"\n", "secret", "set", fmt.Sprintf("s%d", i)); r.code != 0 {
			t.Fatalf("secret set s%d: %+v", i, r)
		}
	}
	c := jobClient(addr)
	type run struct {
		shape, output int
		id            string
	}
	var runs []run
	for i := range leakShapes {
		for k, o := range leakOutputs {
			if withoutJQ && strings.Contains(o.script, "jq ") {
				continue
			}
			spec := &hodeiv1.JobSpec{Command: []string{"sh", "-c", o.script}, Secrets: []*hodeiv1.SecretRef{{Name: fmt.Sprintf("s%d", i), Env: "S"}}}
			if o.want == hodeiv1.JobState_JOB_STATE_TIMED_OUT {
				spec.Timeout = durationpb.New(time.Second)
			}
			runs = append(runs, run{i, k, submit(t, c, spec)})
		}
	}
	for _, r := range runs {
		j := pollJob(t, c, r.id, 120*time.Second, "final", isFinal)
		if j.State != leakOutputs[r.output].want {
			t.Errorf("shape %d, %s: %s (%s), want %s", r.shape, leakOutputs[r.output].name, j.State, j.Message, leakOutputs[r.output].want)
		}
		logs := p.hodei(t, "job", "logs", r.id)
		if !strings.Contains(logs.stdout+logs.stderr, fmt.Sprintf("[REDACTED:s%d]", r.shape)) {
			t.Errorf("shape %d, %s: output shows no mask:\n%.300s", r.shape, leakOutputs[r.output].name, logs.stdout+logs.stderr)
		}
		get := p.hodei(t, "job", "get", r.id, "-o", "json")
		where := map[string][]byte{"job logs": []byte(logs.stdout + logs.stderr), "job get": []byte(get.stdout)}
		checkNoLeak(t, fmt.Sprintf("shape %d, %s", r.shape, leakOutputs[r.output].name), where)
	}

	url := embeddedURL.FindStringSubmatch(dev.logs.String())
	if url == nil {
		t.Fatal("no embedded postgres URL in the log")
	}
	tables := dumpTables(t, url[1])
	if _, ok := tables["table job_logs"]; !ok {
		t.Fatalf("dumped no job_logs: %v", len(tables))
	}
	checkNoLeak(t, "database", tables)
	checkNoLeak(t, "server and agent logs", map[string][]byte{"log": []byte(dev.logs.String())})
	files := map[string][]byte{}
	err := filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // a file PostgreSQL removed meanwhile
		}
		b, err := os.ReadFile(path)
		if err == nil {
			files[path] = b
		}
		return nil
	})
	if err != nil || len(files) < 100 {
		t.Fatalf("walk data dir: %v, %d files", err, len(files))
	}
	walFiles := 0
	for f := range files {
		if strings.Contains(f, "/pg_wal/") {
			walFiles++
		}
	}
	if walFiles == 0 {
		t.Fatal("no WAL file in the data dir")
	}
	checkNoLeak(t, "data dir", files)
}

// checkNoLeak fails the test for every needle of every shape found in
// any of where.
func checkNoLeak(t *testing.T, what string, where map[string][]byte) {
	t.Helper()
	for i, v := range leakShapes {
		for _, n := range needles(v) {
			for name, b := range where {
				if bytes.Contains(b, []byte(n)) {
					t.Errorf("%s: %s holds a form of secret s%d: %.80q", what, name, i, n)
				}
			}
		}
	}
}

// dumpTables reads every table of the database raw (COPY ... binary).
func dumpTables(t *testing.T, dbURL string) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		var buf bytes.Buffer
		if _, err := conn.PgConn().CopyTo(ctx, &buf, "COPY "+n+" TO STDOUT (FORMAT binary)"); err != nil {
			t.Fatalf("copy %s: %v", n, err)
		}
		out["table "+strings.TrimPrefix(n, "public.")] = buf.Bytes()
	}
	return out
}
