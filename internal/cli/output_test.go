package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func sampleJob() *hodeiv1.Job {
	return &hodeiv1.Job{
		Id: "0195a1b2-job",
		Spec: &hodeiv1.JobSpec{
			Name:      "build",
			Command:   []string{"sh", "-c", "make test"},
			Labels:    map[string]string{"pool": "a"},
			Resources: &hodeiv1.Resources{CpuMillis: 500, MemoryMib: 256},
			Timeout:   durationpb.New(time.Minute),
		},
		State:        hodeiv1.JobState_JOB_STATE_CANCELLED,
		Attempt:      2,
		MaxAttempts:  3,
		CreatedAt:    timestamppb.New(testNow.Add(-90 * time.Minute)),
		UpdatedAt:    timestamppb.New(testNow.Add(-time.Minute)),
		FinishedAt:   timestamppb.New(testNow.Add(-time.Minute)),
		FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_CANCELLED,
		Message:      "cancelled by user",
		Attempts: []*hodeiv1.Attempt{
			{
				Number: 1, WorkerId: "w-1", FencingToken: 7, State: hodeiv1.JobState_JOB_STATE_FAILED,
				StartedAt: timestamppb.New(testNow.Add(-80 * time.Minute)), FinishedAt: timestamppb.New(testNow.Add(-70 * time.Minute)),
				ExitCode: 3, FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE, Message: "exit status 3",
			},
			{
				Number: 2, WorkerId: "w-2", FencingToken: 9, State: hodeiv1.JobState_JOB_STATE_CANCELLED,
				FinishedAt: timestamppb.New(testNow.Add(-time.Minute)), ExitCode: -1, Signal: "SIGTERM",
				FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_CANCELLED,
			},
		},
	}
}

func TestPrintJobJSONAndYAML(t *testing.T) {
	job := sampleJob()
	for _, format := range []string{formatJSON, formatYAML} {
		t.Run(format, func(t *testing.T) {
			e, out, _ := testEnv(t, nil, nil)
			if err := e.printJob(format, job); err != nil {
				t.Fatal(err)
			}
			text := out.String()
			wantState := `"state": "JOB_STATE_CANCELLED"`
			if format == formatYAML {
				wantState = "state: JOB_STATE_CANCELLED"
			}
			if !strings.Contains(text, wantState) {
				t.Errorf("output lacks %q:\n%s", wantState, text)
			}
			if strings.Contains(text, "runAt") {
				t.Errorf("output has the unset field runAt:\n%s", text)
			}
			js := []byte(text)
			if format == formatYAML {
				var err error
				if js, err = yaml.YAMLToJSON(js); err != nil {
					t.Fatal(err)
				}
			}
			got := &hodeiv1.Job{}
			if err := protojson.Unmarshal(js, got); err != nil {
				t.Fatalf("output does not parse back: %v\n%s", err, text)
			}
			if diff := cmp.Diff(job, got, protocmp.Transform()); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrintJobTable(t *testing.T) {
	e, out, _ := testEnv(t, nil, nil)
	if err := e.printJob(formatTable, sampleJob()); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"ID:",
		"0195a1b2-job",
		"State:",
		"cancelled",
		"Attempt:    2/3",
		"Command:    sh -c 'make test'",
		"Resources:  cpu 500m, memory 256Mi",
		"Created:    2026-03-01T10:30:00Z (1h ago)",
		"Attempts:",
		"Failure:    cancelled",
		"  #  WORKER  STATE      EXIT          FAILURE    STARTED                        FINISHED                       MESSAGE\n",
		"  1  w-1     failed     3             exit_code  2026-03-01T10:40:00Z (1h ago)  2026-03-01T10:50:00Z (1h ago)  exit status 3\n",
		"  2  w-2     cancelled  -1 (SIGTERM)  cancelled  -                              2026-03-01T11:59:00Z (1m ago)  -\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "Exit code:") {
		t.Errorf("table shows an exit code for a cancelled job:\n%s", text)
	}
}

// TestPrintJobTableOfAWaitingScript: a script job waiting to be retried
// shows its script's size and interpreter, priority, working directory,
// merged output and when it runs again.
func TestPrintJobTableOfAWaitingScript(t *testing.T) {
	for interp, want := range map[string]string{"": "/bin/sh", "/bin/bash": "/bin/bash"} {
		e, out, _ := testEnv(t, nil, nil)
		j := &hodeiv1.Job{
			Id: "j3",
			Spec: &hodeiv1.JobSpec{Script: "make\nmake test\n", Interpreter: interp, Priority: 5, Workdir: "/src", MergeOutput: true,
				Type: "build", Resources: &hodeiv1.Resources{MemoryMib: 64}},
			State: hodeiv1.JobState_JOB_STATE_RETRYING, Attempt: 1, MaxAttempts: 3, SubmittedBy: "ci",
			FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE, ExitCode: 2,
			RunAt: timestamppb.New(testNow.Add(30 * time.Second)),
		}
		if err := e.printJob(formatTable, j); err != nil {
			t.Fatal(err)
		}
		for _, row := range []string{
			"State:         retrying\n", "Exit code:     2\n", "Script:        15 bytes, run by " + want + "\n", "Type:          build\n",
			"Submitted by:  ci\n", "Priority:      5\n", "Workdir:       /src\n", "Output:        stderr merged into stdout\n",
			"Resources:     memory 64Mi\n", "Retry at:      2026-03-01T12:00:30Z (in 30s)\n",
		} {
			if !strings.Contains(out.String(), row) {
				t.Errorf("table lacks %q:\n%s", row, out.String())
			}
		}
		if strings.Contains(out.String(), "Command:") || strings.Contains(out.String(), "Attempts:") {
			t.Errorf("table of a script job without attempts shows a command or attempts:\n%s", out.String())
		}
	}
}

func TestPrintJobList(t *testing.T) {
	e, out, _ := testEnv(t, nil, nil)
	queued := &hodeiv1.Job{Id: "j2", State: hodeiv1.JobState_JOB_STATE_QUEUED, CreatedAt: timestamppb.New(testNow.Add(-5 * time.Second))}
	e.printJobTable([]*hodeiv1.Job{queued, sampleJob()})
	want := "" +
		"ID            NAME   STATE      ATTEMPT  AGE\n" +
		"j2            -      queued     0        5s\n" +
		"0195a1b2-job  build  cancelled  2/3      1h\n"
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("list table (-want +got):\n%s", diff)
	}
}

func TestWatchLine(t *testing.T) {
	got := watchLine(sampleJob(), time.UTC)
	want := "2026-03-01T11:59:00Z cancelled attempt 2/3 (cancelled): cancelled by user"
	if got != want {
		t.Errorf("watchLine = %q, want %q", got, want)
	}
}

func TestEventLine(t *testing.T) {
	ev := &hodeiv1.Event{
		Id: 42, Type: "JobFailed", AggregateKind: "job", AggregateId: "j1",
		Time: timestamppb.New(testNow),
		Payload: &hodeiv1.EventPayload{Kind: &hodeiv1.EventPayload_JobFailed{JobFailed: &hodeiv1.JobFailed{
			JobId: "j1", Attempt: 1, FailureClass: hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE, ExitCode: 2,
		}}},
	}
	got, err := eventLine(formatTable, ev, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	want := `42 2026-03-01T12:00:00Z JobFailed job:j1 {"jobId":"j1","attempt":1,"failureClass":"FAILURE_CLASS_EXIT_CODE","exitCode":2}`
	if got != want {
		t.Errorf("table line:\n got %s\nwant %s", got, want)
	}
	got, err = eventLine(formatJSON, ev, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "\n") || !strings.HasPrefix(got, `{"id":"42","type":"JobFailed",`) {
		t.Errorf("json line = %s; want one compact object", got)
	}
	back := &hodeiv1.Event{}
	if err := protojson.Unmarshal([]byte(got), back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ev, back, protocmp.Transform()); diff != "" {
		t.Errorf("json round trip (-want +got):\n%s", diff)
	}
}

func TestAgeText(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:     "0s",
		59 * time.Second: "59s",
		time.Minute:      "1m",
		90 * time.Minute: "1h",
		2 * time.Hour:    "2h",
		47 * time.Hour:   "47h",
		72 * time.Hour:   "3d",
	} {
		if got := ageText(d); got != want {
			t.Errorf("ageText(%s) = %q, want %q", d, got, want)
		}
	}
}
