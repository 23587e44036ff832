package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
)

const runSynopsis = "[job flags] [--] CMD [ARGS...] | --script FILE"

// run submits a job, streams its output and ends with its exit code.
func (e *env) run(ctx context.Context, args []string) error {
	addr, spec, err := e.parseJobArgs("run", runSynopsis, args, false)
	if err != nil {
		return err
	}
	c := e.dial(addr)
	defer c.close()

	job, existing, err := e.submit(ctx, c, spec)
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{code: ExitCancelled, err: fmt.Errorf("interrupted while submitting the job: %s", errorText(err))}
		}
		return &exitError{code: ExitPlatform, err: err}
	}
	id := job.GetId()
	if existing {
		fmt.Fprintf(e.Err, "hodei: the idempotency key matches job %s; following it\n", id)
	}
	if ctx.Err() != nil {
		return e.cancelOnInterrupt(ctx, c, id)
	}
	final, err := e.streamLogs(ctx, c, &hodeiv1.GetJobLogsRequest{Id: id, Follow: true})
	if ctx.Err() != nil {
		return e.cancelOnInterrupt(ctx, c, id)
	}
	if err != nil {
		return &exitError{code: ExitPlatform, err: fmt.Errorf("job %s: %s", id, errorText(err))}
	}
	code, why := runExitCode(final)
	if why != "" {
		fmt.Fprintf(e.Err, "hodei: job %s %s\n", id, why)
	}
	if code == ExitOK {
		return nil
	}
	return &exitError{code: code}
}

// submit sends SubmitJob. If ctx is cancelled while the call is in
// flight, the call still gets submitGrace to answer, so that the caller
// learns the id of the job it must cancel.
func (e *env) submit(ctx context.Context, c *clients, spec *hodeiv1.JobSpec) (job *hodeiv1.Job, existing bool, err error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(e.submitGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-sctx.Done():
		}
	})
	defer stop()
	resp, err := c.jobs.SubmitJob(sctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
	if err != nil {
		return nil, false, err
	}
	if resp.Msg.GetJob().GetId() == "" {
		return nil, false, errors.New("server returned a job without id")
	}
	return resp.Msg.GetJob(), resp.Msg.GetExisting(), nil
}

// cancelOnInterrupt cancels job id after ctx was cancelled and ends run
// with ExitCancelled.
func (e *env) cancelOnInterrupt(ctx context.Context, c *clients, id string) error {
	fmt.Fprintf(e.Err, "hodei: interrupted; cancelling job %s\n", id)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cancelTimeout)
	defer cancel()
	if _, err := c.jobs.CancelJob(cctx, connect.NewRequest(&hodeiv1.CancelJobRequest{Id: id})); err != nil {
		return &exitError{code: ExitCancelled, err: fmt.Errorf("cancel job %s: %s", id, errorText(err))}
	}
	return &exitError{code: ExitCancelled}
}

// runExitCode maps a final job to run's exit code, with a note for
// outcomes other than the job's own exit code ("" when there is none).
func runExitCode(j *hodeiv1.Job) (code int, why string) {
	class := j.GetFailureClass()
	switch j.GetState() {
	case hodeiv1.JobState_JOB_STATE_SUCCEEDED:
		return ExitOK, ""
	case hodeiv1.JobState_JOB_STATE_TIMED_OUT:
		return ExitTimedOut, "timed out" + suffix(j.GetMessage())
	case hodeiv1.JobState_JOB_STATE_CANCELLED:
		return ExitCancelled, "was cancelled" + suffix(j.GetMessage())
	case hodeiv1.JobState_JOB_STATE_FAILED:
		switch class {
		case hodeiv1.FailureClass_FAILURE_CLASS_EXIT_CODE:
			return processExitCode(j), ""
		case hodeiv1.FailureClass_FAILURE_CLASS_TIMEOUT:
			return ExitTimedOut, "timed out" + suffix(j.GetMessage())
		case hodeiv1.FailureClass_FAILURE_CLASS_CANCELLED:
			return ExitCancelled, "was cancelled" + suffix(j.GetMessage())
		}
		return ExitPlatform, "failed: " + className(class) + suffix(j.GetMessage())
	}
	return ExitPlatform, "ended in state " + stateName(j.GetState())
}

func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}

// processExitCode is the exit code of a job that failed with class
// exit_code: its code when it is one a process can exit with, 128+N when
// it was killed by signal N, else 1.
func processExitCode(j *hodeiv1.Job) int {
	if c := j.GetExitCode(); c >= 1 && c <= 255 {
		return int(c)
	}
	for _, a := range j.GetAttempts() {
		if a.GetNumber() == j.GetAttempt() {
			if n, ok := signalNumber(a.GetSignal()); ok {
				return 128 + n
			}
		}
	}
	return ExitError
}

// signalNumber maps "SIGKILL", "KILL", "killed" or "9" to its Linux number.
func signalNumber(s string) (int, bool) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 128 {
		return n, true
	}
	s = strings.TrimPrefix(s, "SIGNAL: ")
	s = strings.TrimPrefix(s, "SIG")
	n, ok := map[string]int{
		"HUP": 1, "INT": 2, "INTERRUPT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8,
		"KILL": 9, "KILLED": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
		"TERM": 15, "TERMINATED": 15, "XCPU": 24, "XFSZ": 25,
	}[s]
	return n, ok
}
