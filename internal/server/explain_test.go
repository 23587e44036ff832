package server

import (
	"context"
	"regexp"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/api/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// explainer asks ExplainJob through the API, with a jobs:read token.
type explainer struct {
	t    *testing.T
	st   *store.Store
	jobs hodeiv1connect.JobServiceClient
}

func newExplainer(t *testing.T) explainer {
	st := storetest.Open(t)
	base, _ := apiServer(t, st)
	return explainer{t, st, hodeiv1connect.NewJobServiceClient(auth.WithBearer(h2c(), newToken(t, st, "reader", 0, auth.JobsRead)), base, connect.WithGRPC())}
}

// reasons explains job id and checks the state it reports.
func (e explainer) reasons(id string, state hodeiv1.JobState) []string {
	e.t.Helper()
	r, err := e.jobs.ExplainJob(context.Background(), connect.NewRequest(&hodeiv1.ExplainJobRequest{Id: id}))
	if err != nil {
		e.t.Fatalf("explain %s: %v", id, err)
	}
	if r.Msg.State != state {
		e.t.Errorf("explain %s: state %v, want %v", id, r.Msg.State, state)
	}
	return r.Msg.Reasons
}

func (e explainer) want(what, id string, want ...string) {
	e.t.Helper()
	if d := cmp.Diff(want, e.reasons(id, hodeiv1.JobState_JOB_STATE_QUEUED)); d != "" {
		e.t.Errorf("%s: reasons (-want +got):\n%s", what, d)
	}
}

func (e explainer) submit(spec job.Spec) string {
	e.t.Helper()
	j, _, err := e.st.CreateJob(context.Background(), spec, 3)
	if err != nil {
		e.t.Fatal(err)
	}
	return j.ID
}

// worker connects a worker of provider with labels and limits and the
// given number of slots.
func (e explainer) worker(provider string, labels map[string]string, slots int, cpu int64) string {
	e.t.Helper()
	ctx := context.Background()
	id, token, err := e.st.NewWorker(ctx, provider, "", labels, time.Minute)
	if err != nil {
		e.t.Fatal(err)
	}
	_, cred, _, err := e.st.Enroll(ctx, store.Enrollment{Token: token, Hostname: "host", Version: "test", Labels: labels, Slots: slots, CPUMillis: cpu})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.st.ConnectWorker(ctx, id, cred, "", "test", false); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// TestExplainWithoutWorkers: a waiting job is explained by what is
// missing: any worker, workers with its labels or image, a provider that
// could start one (disabled, unhealthy, or able to and on its way).
func TestExplainWithoutWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newExplainer(t)
	plain := e.submit(job.Spec{Command: []string{"true"}})
	gpu := e.submit(job.Spec{Command: []string{"true"}, Image: "cuda:12", Labels: map[string]string{"gpu": "true"}})
	const noProvider = "no provider is configured: workers must connect on their own"
	e.want("no worker, no provider", plain, "no worker is connected", noProvider)
	e.want("labels and image", gpu, "waiting for a worker with label gpu=true: no connected worker has it", `no connected worker runs image "cuda:12"`, noProvider)

	for _, p := range []store.Provider{{Name: "docker", Kind: "docker", MaxWorkers: 4, AnyImage: true, Labels: map[string]string{"gpu": "true"}}, {Name: "local", Kind: "process", MaxWorkers: 2}} {
		if err := e.st.SeedProvider(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	cannot := `provider local (process) cannot run image "cuda:12"`
	e.want("a provider can start one", gpu, "waiting for a worker with label gpu=true: no connected worker has it", `no connected worker runs image "cuda:12"`,
		"provider docker can start a matching worker (at most 4): waiting for it", cannot)
	e.want("the other provider lacks the label", plain, "no worker is connected",
		"provider docker can start a matching worker (at most 4): waiting for it", "provider local can start a matching worker (at most 2): waiting for it")
	if _, err := e.st.UpdateProvider(ctx, store.Provider{Name: "docker", Enabled: false, MaxWorkers: 4}); err != nil {
		t.Fatal(err)
	}
	got := e.reasons(gpu, hodeiv1.JobState_JOB_STATE_QUEUED)
	if len(got) != 4 || got[2] != "provider docker could start a matching worker but is disabled" {
		t.Errorf("disabled provider: %q", got)
	}
	if _, err := e.st.UpdateProvider(ctx, store.Provider{Name: "docker", Enabled: true, MaxWorkers: 4}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.SetProviderHealth(ctx, "docker", false, "engine unreachable", time.Now()); err != nil {
		t.Fatal(err)
	}
	got = e.reasons(gpu, hodeiv1.JobState_JOB_STATE_QUEUED)
	if len(got) != 4 || !regexp.MustCompile(`^provider docker could start a matching worker but is unhealthy since \S+Z: engine unreachable$`).MatchString(got[2]) {
		t.Errorf("unhealthy provider: %q", got)
	}
	if _, err := e.jobs.ExplainJob(ctx, connect.NewRequest(&hodeiv1.ExplainJobRequest{Id: uuid.NewString()})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("explain of an unknown job: %v, want not found", err)
	}
}

// TestExplainWithWorkers: with workers connected, a waiting job is
// explained by the workers that match it: none has all its labels, one is
// too small for it, one belongs to an unhealthy provider, all are busy, or
// one has a free slot and dispatch is due.
func TestExplainWithWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newExplainer(t)
	a := e.worker("pool", map[string]string{"gpu": "true", "zone": "a"}, 1, 1000)
	e.worker("pool", map[string]string{"zone": "b"}, 1, 0)
	split := e.submit(job.Spec{Command: []string{"true"}, Labels: map[string]string{"gpu": "true", "zone": "b"}})
	const noProvider = "no provider is configured: workers must connect on their own"
	e.want("labels on different workers", split, "no connected worker has all of the labels gpu=true, zone=b", noProvider)

	big := e.submit(job.Spec{Command: []string{"true"}, Labels: map[string]string{"gpu": "true"}, CPUMillis: 2000, MemoryMiB: 512})
	e.want("too small", big, "worker "+a+" matches, but allows 1000m CPU and any memory per job and the job needs 2000m CPU and 512 MiB", noProvider)

	gpu := e.submit(job.Spec{Command: []string{"true"}, Labels: map[string]string{"gpu": "true"}})
	e.want("a free slot", gpu, "1 matching worker(s) have 1 free slot(s); dispatch is due")
	// The oldest job it fits takes worker a's slot.
	as, err := e.st.Claim(ctx, store.WorkerMatch{ID: a, Labels: map[string]string{"gpu": "true", "zone": "a"}, CPUMillis: 1000}, 1)
	if err != nil || len(as) != 1 || as[0].JobID != gpu {
		t.Fatalf("claim: %v, %v; want job %s", as, err, gpu)
	}
	other := e.submit(job.Spec{Command: []string{"true"}, Labels: map[string]string{"gpu": "true"}})
	e.want("busy", other, "all 1 matching worker(s) are busy (1 of 1 slots in use)")
	running := e.reasons(gpu, hodeiv1.JobState_JOB_STATE_ASSIGNED)
	if len(running) != 1 || !regexp.MustCompile(`^assigned on worker `+a+` \(attempt 1 of 3\) for \S+s$`).MatchString(running[0]) {
		t.Errorf("assigned job: %q", running)
	}

	if err := e.st.SeedProvider(ctx, store.Provider{Name: "pool", Kind: "process", MaxWorkers: 2, Labels: map[string]string{"zone": "b"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.SetProviderHealth(ctx, "pool", false, "cannot start processes", time.Now()); err != nil {
		t.Fatal(err)
	}
	zoneB := e.submit(job.Spec{Command: []string{"true"}, Labels: map[string]string{"zone": "b"}})
	got := e.reasons(zoneB, hodeiv1.JobState_JOB_STATE_QUEUED)
	if len(got) != 2 || !regexp.MustCompile(`^worker \S+ matches, but its provider pool is unhealthy since \S+Z: cannot start processes$`).MatchString(got[0]) ||
		!regexp.MustCompile(`^provider pool could start a matching worker but is unhealthy since`).MatchString(got[1]) {
		t.Errorf("worker of an unhealthy provider: %q", got)
	}
}

// TestExplainFinishedAndRetrying: a finished job is explained by how it
// ended; one waiting out its backoff, by when it runs again.
func TestExplainFinishedAndRetrying(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newExplainer(t)
	w := storetest.ConnectedWorker(t, e.st)
	failing := e.submit(job.Spec{Command: []string{"false"}, Retry: job.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Hour, MaxBackoff: time.Hour, RetryableExitCodes: []int32{1}}})
	as, err := e.st.Claim(ctx, store.WorkerMatch{ID: w}, 1)
	if err != nil || len(as) != 1 {
		t.Fatalf("claim: %v, %v", as, err)
	}
	out, err := e.st.ApplyReports(ctx, []store.Report{{JobID: uuid.MustParse(failing), Token: as[0].Token, Finish: &store.Result{ExitCode: 1, Message: "exit status 1"}}})
	if err != nil || out[0].Outcome.State != job.StateRetrying {
		t.Fatalf("result: %+v, %v; want retrying", out, err)
	}
	got := e.reasons(failing, hodeiv1.JobState_JOB_STATE_RETRYING)
	if len(got) != 2 || !regexp.MustCompile(`^waiting for retry until \S+Z \(in \S+; attempt 2 of 2 next\)$`).MatchString(got[0]) ||
		got[1] != "1 matching worker(s) have 1 free slot(s); dispatch is due" {
		t.Errorf("retrying job: %q", got)
	}
	if _, err := e.st.CancelJob(ctx, failing, "no longer needed"); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"finished cancelled after 1 attempt(s): cancelled, exit code 0: no longer needed"}, e.reasons(failing, hodeiv1.JobState_JOB_STATE_CANCELLED)); d != "" {
		t.Errorf("cancelled job (-want +got):\n%s", d)
	}
	ok := e.submit(job.Spec{Command: []string{"true"}})
	as, err = e.st.Claim(ctx, store.WorkerMatch{ID: w}, 1)
	if err != nil || len(as) != 1 || as[0].JobID != ok {
		t.Fatalf("claim: %v, %v", as, err)
	}
	if _, err := e.st.ApplyReports(ctx, []store.Report{{JobID: uuid.MustParse(ok), Token: as[0].Token, Finish: &store.Result{}}}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"finished succeeded after 1 attempt(s)"}, e.reasons(ok, hodeiv1.JobState_JOB_STATE_SUCCEEDED)); d != "" {
		t.Errorf("succeeded job (-want +got):\n%s", d)
	}
}
