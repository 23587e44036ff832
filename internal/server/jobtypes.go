package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/jobpb"
	"github.com/hodei-dev/hodei/internal/store"
)

// jobTypeService manages the retry defaults of job types, applied when
// jobs are submitted (store.CreateJobs).
type jobTypeService struct{ s *Server }

func jobTypeToProto(t store.JobType) *hodeiv1.JobType {
	return &hodeiv1.JobType{Name: t.Name, Retry: jobpb.RetryToProto(t.Retry), UpdatedAt: timestamppb.New(t.UpdatedAt)}
}

func (h jobTypeService) SetJobType(ctx context.Context, req *connect.Request[hodeiv1.SetJobTypeRequest]) (*connect.Response[hodeiv1.SetJobTypeResponse], error) {
	p := req.Msg.GetJobType()
	if p == nil {
		return nil, connectError(&job.FieldError{Field: "job_type", Rule: "is required"})
	}
	t := store.JobType{Name: p.Name}
	if p.Retry != nil {
		r, err := jobpb.RetryFromProto(p.Retry)
		if err != nil {
			return nil, connectError(err)
		}
		t.Retry = r
	}
	set, err := h.s.store.SetJobTypes(ctx, []store.JobType{t})
	if err != nil {
		return nil, connectError(err)
	}
	h.s.log.Info("job type set", "job_type", t.Name)
	return connect.NewResponse(&hodeiv1.SetJobTypeResponse{JobType: jobTypeToProto(set[0])}), nil
}

func (h jobTypeService) GetJobType(ctx context.Context, req *connect.Request[hodeiv1.GetJobTypeRequest]) (*connect.Response[hodeiv1.GetJobTypeResponse], error) {
	t, err := h.s.store.GetJobType(ctx, req.Msg.Name)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hodeiv1.GetJobTypeResponse{JobType: jobTypeToProto(t)}), nil
}

func (h jobTypeService) ListJobTypes(ctx context.Context, _ *connect.Request[hodeiv1.ListJobTypesRequest]) (*connect.Response[hodeiv1.ListJobTypesResponse], error) {
	ts, err := h.s.store.ListJobTypes(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	resp := &hodeiv1.ListJobTypesResponse{}
	for _, t := range ts {
		resp.JobTypes = append(resp.JobTypes, jobTypeToProto(t))
	}
	return connect.NewResponse(resp), nil
}

func (h jobTypeService) DeleteJobType(ctx context.Context, req *connect.Request[hodeiv1.DeleteJobTypeRequest]) (*connect.Response[hodeiv1.DeleteJobTypeResponse], error) {
	if err := h.s.store.DeleteJobType(ctx, req.Msg.Name); err != nil {
		return nil, connectError(err)
	}
	h.s.log.Info("job type deleted", "job_type", req.Msg.Name)
	return connect.NewResponse(&hodeiv1.DeleteJobTypeResponse{}), nil
}

// ParseJobTypes parses a file of job type defaults: a map from type name
// to RetryPolicy in the proto JSON mapping, written as YAML or JSON
// ({"build": {"max_attempts": 5, "retryable_exit_codes": [75],
// "initial_backoff": "2s"}}); durations may also be Go durations ("1m")
// and failure classes lowercase ("worker_lost"). Unknown fields are
// errors; the policies are validated when stored.
func ParseJobTypes(data []byte) ([]store.JobType, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(js, &raw); err != nil {
		return nil, fmt.Errorf("want a map of job type names to retry policies: %w", err)
	}
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make([]store.JobType, 0, len(names))
	for _, name := range names {
		entry, err := goDurationsAndClasses(raw[name])
		if err != nil {
			return nil, fmt.Errorf("job type %q: %w", name, err)
		}
		p := &hodeiv1.RetryPolicy{}
		if err := protojson.Unmarshal(entry, p); err != nil {
			return nil, fmt.Errorf("job type %q: %w", name, err)
		}
		r, err := jobpb.RetryFromProto(p)
		if err != nil {
			return nil, fmt.Errorf("job type %q: %w", name, err)
		}
		out = append(out, store.JobType{Name: name, Retry: r})
	}
	return out, nil
}

// LoadJobTypes stores the job types of the file at path (ParseJobTypes),
// replacing stored ones of the same names: the file wins at start; types
// it does not name are left as they are. Nothing is stored when one entry
// is invalid. It returns how many types it stored.
func LoadJobTypes(ctx context.Context, st *store.Store, path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("load job types: %w", err)
	}
	types, err := ParseJobTypes(data)
	if err != nil {
		return 0, fmt.Errorf("load job types from %s: %w", path, err)
	}
	if _, err := st.SetJobTypes(ctx, types); err != nil {
		return 0, fmt.Errorf("load job types from %s: %w", path, err)
	}
	return len(types), nil
}

// goDurationsAndClasses rewrites a retry policy's Go durations ("1m30s")
// as proto JSON ones ("90s") and its lowercase failure classes
// ("worker_lost") as enum names.
func goDurationsAndClasses(entry json.RawMessage) (json.RawMessage, error) {
	var m map[string]any
	if err := json.Unmarshal(entry, &m); err != nil || m == nil {
		return entry, nil // protojson names what is wrong
	}
	for _, k := range []string{"initial_backoff", "initialBackoff", "max_backoff", "maxBackoff"} {
		v, ok := m[k].(string)
		if !ok || strings.HasSuffix(v, "s") && !strings.ContainsAny(strings.TrimSuffix(v, "s"), "hmuµn") {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		m[k] = fmt.Sprintf("%gs", d.Seconds())
	}
	for _, k := range []string{"retryable_classes", "retryableClasses"} {
		list, _ := m[k].([]any)
		for i, c := range list {
			if s, ok := c.(string); ok && !strings.HasPrefix(s, "FAILURE_CLASS_") {
				list[i] = "FAILURE_CLASS_" + strings.ToUpper(s)
			}
		}
	}
	return json.Marshal(m)
}
