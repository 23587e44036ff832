package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// JobType is the retry policy jobs of a type get for the fields their
// spec leaves unset.
type JobType struct {
	Name      string
	Retry     job.RetryPolicy
	UpdatedAt time.Time
}

// Validate checks t's name and policy; errors name the field.
func (t *JobType) Validate() error {
	if err := job.ValidateTypeName("name", t.Name); err != nil {
		return err
	}
	return t.Retry.Validate()
}

// SetJobTypes validates and stores job types in one transaction,
// replacing those of the same names; if one is invalid nothing is
// written. It returns them as stored.
func (s *Store) SetJobTypes(ctx context.Context, types []JobType) ([]JobType, error) {
	for i := range types {
		if err := types[i].Validate(); err != nil {
			return nil, fmt.Errorf("set job type %q: %w", types[i].Name, err)
		}
	}
	now := s.now().Truncate(time.Microsecond) // as stored
	out := make([]JobType, len(types))
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		for i, t := range types {
			retry, err := json.Marshal(t.Retry)
			if err != nil {
				return err
			}
			if err := q.UpsertJobType(ctx, db.UpsertJobTypeParams{Name: t.Name, Retry: retry, UpdatedAt: now}); err != nil {
				return fmt.Errorf("set job type %s: %w", t.Name, err)
			}
			t.UpdatedAt = now
			out[i] = t
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetJobType returns the job type name, or job.ErrNotFound.
func (s *Store) GetJobType(ctx context.Context, name string) (JobType, error) {
	r, err := s.q.GetJobType(ctx, name)
	if IsNoRows(err) {
		return JobType{}, fmt.Errorf("job type %s: %w", name, job.ErrNotFound)
	}
	if err != nil {
		return JobType{}, fmt.Errorf("get job type %s: %w", name, err)
	}
	return jobTypeFromRow(r)
}

// ListJobTypes lists the job types by name.
func (s *Store) ListJobTypes(ctx context.Context) ([]JobType, error) {
	rows, err := s.q.ListJobTypes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list job types: %w", err)
	}
	out := make([]JobType, 0, len(rows))
	for _, r := range rows {
		t, err := jobTypeFromRow(r)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// DeleteJobType removes the job type name (job.ErrNotFound when there is
// none); jobs submitted before keep the policy they got.
func (s *Store) DeleteJobType(ctx context.Context, name string) error {
	_, err := s.q.DeleteJobType(ctx, name)
	if IsNoRows(err) {
		return fmt.Errorf("job type %s: %w", name, job.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("delete job type %s: %w", name, err)
	}
	return nil
}

func jobTypeFromRow(r db.JobType) (JobType, error) {
	retry, err := decodeRetry(r.Name, r.Retry)
	return JobType{Name: r.Name, Retry: retry, UpdatedAt: r.UpdatedAt}, err
}

// decodeRetry decodes the stored retry policy of job type name.
func decodeRetry(name string, raw []byte) (job.RetryPolicy, error) {
	var p job.RetryPolicy
	if err := json.Unmarshal(raw, &p); err != nil {
		return p, fmt.Errorf("decode job type %s: %w", name, err)
	}
	return p, nil
}

// withTypeDefaults returns specs with the retry defaults of the types
// they name filled in under their own values (job.RetryPolicy.Or): one
// query for the whole batch, none when no spec names a type. specs is
// not modified; the result shares it when no type applies.
func (s *Store) withTypeDefaults(ctx context.Context, specs []job.Spec) ([]job.Spec, error) {
	var names []string
	seen := map[string]bool{}
	for i := range specs {
		if t := specs[i].Type; t != "" && !seen[t] {
			seen[t] = true
			names = append(names, t)
		}
	}
	if len(names) == 0 {
		return specs, nil
	}
	rows, err := s.q.JobTypesByNames(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("job types: %w", err)
	}
	if len(rows) == 0 {
		return specs, nil
	}
	byName := make(map[string]job.RetryPolicy, len(rows))
	for _, r := range rows {
		p, err := decodeRetry(r.Name, r.Retry)
		if err != nil {
			return nil, err
		}
		byName[r.Name] = p
	}
	out := make([]job.Spec, len(specs))
	copy(out, specs)
	for i := range out {
		if p, ok := byName[out[i].Type]; ok {
			out[i].Retry = out[i].Retry.Or(p)
		}
	}
	return out, nil
}
