package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

// marshalJSON renders m in the proto JSON mapping (enum names, camelCase
// fields, unset fields left out), indented when multiline. The result is
// normalized with encoding/json because protojson varies its whitespace
// on purpose.
func marshalJSON(m proto.Message, multiline bool) ([]byte, error) {
	raw, err := protojson.MarshalOptions{Multiline: multiline, EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if multiline {
		err = json.Indent(&buf, raw, "", "  ")
	} else {
		err = json.Compact(&buf, raw)
	}
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// renderMessage renders m as json or yaml, ending in a newline.
func renderMessage(format string, m proto.Message) ([]byte, error) {
	js, err := marshalJSON(m, true)
	if err != nil {
		return nil, err
	}
	if format == formatYAML {
		return yaml.JSONToYAML(js)
	}
	return append(js, '\n'), nil
}

func (e *env) printMessage(format string, m proto.Message) error {
	b, err := renderMessage(format, m)
	if err != nil {
		return err
	}
	_, err = e.Out.Write(b)
	return err
}

// printJob prints one job: json, yaml or a KEY: value summary.
func (e *env) printJob(format string, j *hodeiv1.Job) error {
	if format != formatTable {
		return e.printMessage(format, j)
	}
	var buf bytes.Buffer
	writeJobSummary(&buf, j, e.now(), e.loc)
	_, err := e.Out.Write(buf.Bytes())
	return err
}

// writeJobSummary writes the table form of job get.
func writeJobSummary(buf *bytes.Buffer, j *hodeiv1.Job, now time.Time, loc *time.Location) {
	tw := tabwriter.NewWriter(buf, 0, 4, 2, ' ', 0)
	row := func(key, value string) {
		if value != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", key, value)
		}
	}
	spec := j.GetSpec()
	row("ID", j.GetId())
	row("Name", spec.GetName())
	row("State", stateName(j.GetState()))
	row("Attempt", attemptText(j))
	if st := j.GetState(); st == hodeiv1.JobState_JOB_STATE_SUCCEEDED || j.GetFailureClass() == hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE {
		row("Exit code", strconv.Itoa(int(j.GetExitCode())))
	}
	row("Failure", className(j.GetFailureClass()))
	row("Message", j.GetMessage())
	if len(spec.GetCommand()) > 0 {
		row("Command", shellJoin(spec.GetCommand()))
	}
	if spec.GetScript() != "" {
		interp := spec.GetInterpreter()
		if interp == "" {
			interp = "/bin/sh"
		}
		row("Script", fmt.Sprintf("%d bytes, run by %s", len(spec.GetScript()), interp))
	}
	row("Image", spec.GetImage())
	row("Type", spec.GetType())
	row("Submitted by", j.GetSubmittedBy())
	if spec.GetPriority() != 0 {
		row("Priority", strconv.Itoa(int(spec.GetPriority())))
	}
	row("Workdir", spec.GetWorkdir())
	if spec.GetMergeOutput() {
		row("Output", "stderr merged into stdout")
	}
	if r := spec.GetResources(); r != nil {
		var parts []string
		if r.GetCpuMillis() > 0 {
			parts = append(parts, fmt.Sprintf("cpu %dm", r.GetCpuMillis()))
		}
		if r.GetMemoryMib() > 0 {
			parts = append(parts, fmt.Sprintf("memory %dMi", r.GetMemoryMib()))
		}
		row("Resources", strings.Join(parts, ", "))
	}
	if d := spec.GetTimeout(); d != nil {
		row("Timeout", d.AsDuration().String())
	}
	row("Labels", joinMap(spec.GetLabels()))
	row("Tags", joinMap(spec.GetTags()))
	row("Env", strings.Join(slices.Sorted(maps.Keys(spec.GetEnv())), ", "))
	row("Created", timeText(j.GetCreatedAt(), now, loc))
	row("Updated", timeText(j.GetUpdatedAt(), now, loc))
	row("Finished", timeText(j.GetFinishedAt(), now, loc))
	if j.GetState() == hodeiv1.JobState_JOB_STATE_RETRYING {
		row("Retry at", timeText(j.GetRunAt(), now, loc))
	}
	tw.Flush()

	if len(j.GetAttempts()) == 0 {
		return
	}
	buf.WriteString("Attempts:\n")
	tw = tabwriter.NewWriter(buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tWORKER\tSTATE\tEXIT\tFAILURE\tSTARTED\tFINISHED\tMESSAGE")
	for _, a := range j.GetAttempts() {
		exit := ""
		if a.GetFinishedAt() != nil || a.GetFailureClass() != hodeiv1.FailureClass_FAILURE_CLASS_UNSPECIFIED {
			exit = strconv.Itoa(int(a.GetExitCode()))
			if a.GetSignal() != "" {
				exit += " (" + a.GetSignal() + ")"
			}
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			a.GetNumber(), dash(a.GetWorkerId()), stateName(a.GetState()), dash(exit),
			dash(className(a.GetFailureClass())), dash(timeText(a.GetStartedAt(), now, loc)),
			dash(timeText(a.GetFinishedAt(), now, loc)), dash(oneLine(a.GetMessage())))
	}
	tw.Flush()
}

// printJobTable prints the table form of job list.
func (e *env) printJobTable(jobs []*hodeiv1.Job) {
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tATTEMPT\tAGE")
	now := e.now()
	for _, j := range jobs {
		age := "-"
		if t := j.GetCreatedAt(); t != nil {
			age = ageText(now.Sub(t.AsTime()))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", j.GetId(), dash(oneLine(j.GetSpec().GetName())),
			stateName(j.GetState()), attemptText(j), age)
	}
	tw.Flush()
}

// printWatch prints one state change of job watch.
func (e *env) printWatch(format string, j *hodeiv1.Job) error {
	switch format {
	case formatJSON:
		return e.printMessage(format, j)
	case formatYAML:
		fmt.Fprintln(e.Out, "---")
		return e.printMessage(format, j)
	}
	_, err := fmt.Fprintln(e.Out, watchLine(j, e.loc))
	return err
}

// watchLine is "TIME STATE attempt N/M [(exit code N) | (class)][: message]".
func watchLine(j *hodeiv1.Job, loc *time.Location) string {
	var b strings.Builder
	t := j.GetUpdatedAt()
	if t == nil {
		t = j.GetCreatedAt()
	}
	if t != nil {
		b.WriteString(t.AsTime().In(loc).Format(time.RFC3339))
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "%s attempt %s", stateName(j.GetState()), attemptText(j))
	switch c := j.GetFailureClass(); c {
	case hodeiv1.FailureClass_FAILURE_CLASS_UNSPECIFIED:
	case hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE:
		fmt.Fprintf(&b, " (exit code %d)", j.GetExitCode())
	default:
		fmt.Fprintf(&b, " (%s)", className(c))
	}
	if m := oneLine(j.GetMessage()); m != "" {
		b.WriteString(": " + m)
	}
	return b.String()
}

// stateName is "queued" for JOB_STATE_QUEUED.
func stateName(s hodeiv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

// className is "exit_code" for FAILURE_CLASS_EXIT_CODE, "" for unspecified.
func className(c hodeiv1.FailureClass) string {
	if c == hodeiv1.FailureClass_FAILURE_CLASS_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(c.String(), "FAILURE_CLASS_"))
}

func attemptText(j *hodeiv1.Job) string {
	if j.GetMaxAttempts() > 0 {
		return fmt.Sprintf("%d/%d", j.GetAttempt(), j.GetMaxAttempts())
	}
	return strconv.Itoa(int(j.GetAttempt()))
}

func timeText(t *timestamppb.Timestamp, now time.Time, loc *time.Location) string {
	if t == nil {
		return ""
	}
	at := t.AsTime()
	if ahead := at.Sub(now); ahead >= time.Second { // a retry's run_at
		return fmt.Sprintf("%s (in %s)", at.In(loc).Format(time.RFC3339), ageText(ahead))
	}
	return fmt.Sprintf("%s (%s ago)", at.In(loc).Format(time.RFC3339), ageText(now.Sub(at)))
}

// ageText is a short rounded duration: 45s, 12m, 5h, 3d.
func ageText(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

func joinMap(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

// shellJoin quotes argv for display.
func shellJoin(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
		}) < 0 {
			parts[i] = a
			continue
		}
		parts[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(parts, " ")
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
