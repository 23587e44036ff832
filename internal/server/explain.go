package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/jobpb"
	"github.com/hodei-dev/hodei/internal/store"
)

func (h jobService) ExplainJob(ctx context.Context, req *connect.Request[hodeiv1.ExplainJobRequest]) (*connect.Response[hodeiv1.ExplainJobResponse], error) {
	j, err := h.s.store.GetJob(ctx, req.Msg.Id)
	if err != nil {
		return nil, connectError(err)
	}
	reasons, err := h.s.explain(ctx, j)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.ExplainJobResponse{State: jobpb.StateToProto(j.State), Reasons: reasons}), nil
}

// explain says, in plain words, why j is where it is.
func (s *Server) explain(ctx context.Context, j job.Job) ([]string, error) {
	now := s.store.Now()
	switch {
	case j.State.Final():
		r := fmt.Sprintf("finished %s after %d attempt(s)", j.State, j.Attempt)
		if j.FailureClass != job.FailureNone {
			r += fmt.Sprintf(": %s, exit code %d", j.FailureClass, j.ExitCode)
		}
		if j.Message != "" {
			r += ": " + j.Message
		}
		return []string{r}, nil
	case j.State == job.StateAssigned || j.State == job.StateRunning:
		a := j.Attempts[len(j.Attempts)-1]
		since := a.AssignedAt
		if !a.StartedAt.IsZero() {
			since = a.StartedAt
		}
		return []string{fmt.Sprintf("%s on worker %s (attempt %d of %d) for %s", j.State, a.WorkerID, a.Number, j.MaxAttempts, now.Sub(since).Round(time.Millisecond))}, nil
	}
	var reasons []string
	if j.State == job.StateRetrying && j.RunAt.After(now) {
		reasons = append(reasons, fmt.Sprintf("waiting for retry until %s (in %s; attempt %d of %d next)",
			j.RunAt.UTC().Format(time.RFC3339), j.RunAt.Sub(now).Round(time.Millisecond), j.Attempt+1, j.MaxAttempts))
	}
	workers, err := s.store.WorkerLoad(ctx)
	if err != nil {
		return nil, err
	}
	provs, err := s.store.ListProviders(ctx)
	if err != nil {
		return nil, err
	}
	healthy := map[string]store.Provider{}
	for _, p := range provs {
		healthy[p.Name] = p
	}
	var matching []store.Worker
	matched := false // some worker has the job's labels and image
	for _, w := range workers {
		if !job.MatchedBy(j.Spec.Image, j.Spec.Labels, w.Image, w.Labels) {
			continue
		}
		matched = true
		if !job.Fits(j.Spec.CPUMillis, j.Spec.MemoryMiB, w.CPUMillis, w.MemoryMiB) {
			reasons = append(reasons, fmt.Sprintf("worker %s matches, but allows %s per job and the job needs %s",
				w.ID, limits(w.CPUMillis, w.MemoryMiB), limits(j.Spec.CPUMillis, j.Spec.MemoryMiB)))
			continue
		}
		if p, ok := healthy[w.Provider]; ok && !p.Healthy {
			reasons = append(reasons, fmt.Sprintf("worker %s matches, but its provider %s is unhealthy since %s: %s",
				w.ID, p.Name, p.UnhealthySince.UTC().Format(time.RFC3339), p.HealthMessage))
			continue
		}
		matching = append(matching, w)
	}
	if len(matching) > 0 {
		slots, busy := 0, 0
		for _, w := range matching {
			slots += w.Slots
			busy += min(w.Running, w.Slots)
		}
		if busy >= slots {
			reasons = append(reasons, fmt.Sprintf("all %d matching worker(s) are busy (%d of %d slots in use)", len(matching), busy, slots))
		} else {
			reasons = append(reasons, fmt.Sprintf("%d matching worker(s) have %d free slot(s); dispatch is due", len(matching), slots-busy))
		}
		return reasons, nil
	}
	if missing := missingLabels(workers, j.Spec.Labels); len(missing) > 0 {
		reasons = append(reasons, fmt.Sprintf("waiting for a worker with label %s: no connected worker has it", strings.Join(missing, ", ")))
	} else if len(j.Spec.Labels) > 0 && !matched {
		reasons = append(reasons, fmt.Sprintf("no connected worker has all of the labels %s", formatLabels(j.Spec.Labels)))
	}
	if j.Spec.Image != "" && !matched {
		reasons = append(reasons, fmt.Sprintf("no connected worker runs image %q", j.Spec.Image))
	}
	if len(workers) == 0 && len(j.Spec.Labels) == 0 && j.Spec.Image == "" {
		reasons = append(reasons, "no worker is connected")
	}
	if len(provs) == 0 {
		reasons = append(reasons, "no provider is configured: workers must connect on their own")
	}
	for _, p := range provs {
		ok, why := p.CanServe(j.Spec.Image, j.Spec.Labels)
		switch {
		case !ok:
			reasons = append(reasons, why)
		case !p.Enabled:
			reasons = append(reasons, fmt.Sprintf("provider %s could start a matching worker but is disabled", p.Name))
		case !p.Healthy:
			reasons = append(reasons, fmt.Sprintf("provider %s could start a matching worker but is unhealthy since %s: %s",
				p.Name, p.UnhealthySince.UTC().Format(time.RFC3339), p.HealthMessage))
		default:
			reasons = append(reasons, fmt.Sprintf("provider %s can start a matching worker (at most %d): waiting for it", p.Name, p.MaxWorkers))
		}
	}
	return reasons, nil
}

func limits(cpu, mem int64) string {
	c, m := "any CPU", "any memory"
	if cpu > 0 {
		c = fmt.Sprintf("%dm CPU", cpu)
	}
	if mem > 0 {
		m = fmt.Sprintf("%d MiB", mem)
	}
	return c + " and " + m
}

// missingLabels lists the required labels that no worker has at all.
func missingLabels(workers []store.Worker, labels map[string]string) []string {
	var out []string
	for k, v := range labels {
		found := false
		for _, w := range workers {
			if have, ok := w.Labels[k]; ok && have == v {
				found = true
				break
			}
		}
		if !found {
			out = append(out, k+"="+v)
		}
	}
	sort.Strings(out)
	return out
}

func formatLabels(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
