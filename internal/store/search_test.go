package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

// TestListJobsTextSearchesInBoundedSteps: a text that three of 1,000
// jobs hold (in a name, in a command's arguments, in a script) is found
// by pages that each examine at most ScanLimit jobs, newest first; a
// page that finds nothing still continues below the last job it
// examined, and says how far it searched.
func TestListJobsTextSearchesInBoundedSteps(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	ctx := context.Background()
	specs := make([]job.Spec, 1000)
	for i := range specs {
		specs[i] = job.Spec{Name: fmt.Sprintf("job-%d", i), Command: []string{"echo", fmt.Sprint(i)}}
	}
	specs[50] = job.Spec{Name: "Needle in a haystack", Command: []string{"true"}}
	specs[420] = job.Spec{Command: []string{"grep", "-c", "NEEDLE", "/etc/hosts"}}
	specs[910] = job.Spec{Script: "echo needle >&2\n"}
	jobs, _, err := s.CreateJobs(ctx, specs, 1)
	if err != nil {
		t.Fatal(err)
	}
	newest := func(i int) int { return len(jobs) - 1 - i } // the i-th newest

	const scan = 100
	f := store.ListFilter{Text: "nEeDlE", Limit: 2, ScanLimit: scan}
	var found []string
	calls := 0
	for {
		page, err := s.ListJobs(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		for _, j := range page.Jobs {
			found = append(found, j.Spec.Name+j.Spec.Script+strings.Join(j.Spec.Command, " "))
		}
		if !page.More {
			break
		}
		if len(page.Jobs) < f.Limit {
			// Stopped at the bound: below the last job examined.
			examined := jobs[newest(calls*scan-1)]
			if !page.Bounded || page.Next.ID != examined.ID || !page.Next.CreatedAt.Equal(examined.CreatedAt) {
				t.Fatalf("call %d found %d of %d: bounded=%v next=%+v, want bounded at job %s (the %d-th newest)",
					calls, len(page.Jobs), f.Limit, page.Bounded, page.Next, examined.ID, calls*scan)
			}
		}
		f.AfterID = page.Next.ID
	}
	want := []string{"echo needle >&2\n", "grep -c NEEDLE /etc/hosts", "Needle in a haystacktrue"}
	if diff := cmp.Diff(want, found); diff != "" {
		t.Errorf("found (-want +got):\n%s", diff)
	}
	if calls != len(jobs)/scan {
		t.Errorf("%d calls to search %d jobs %d at a time, want %d", calls, len(jobs), scan, len(jobs)/scan)
	}

	// A text that crosses arguments matches the command joined by spaces.
	page, err := s.ListJobs(ctx, store.ListFilter{Text: "-C needle /etc", Limit: 10, ScanLimit: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Jobs) != 1 || page.Jobs[0].ID != jobs[420].ID || page.More {
		t.Errorf("search across arguments: %d jobs, more=%v; want job 420 alone", len(page.Jobs), page.More)
	}

	// A common text fills the page before the bound: the next page starts
	// below the page's last job.
	page, err = s.ListJobs(ctx, store.ListFilter{Text: "ECHO", Limit: 5, ScanLimit: scan})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Jobs) != 5 || !page.More || page.Bounded || page.Next.ID != page.Jobs[4].ID || page.Jobs[0].ID != jobs[999].ID {
		t.Errorf("common text: %d jobs, more=%v bounded=%v next=%s; want the 5 newest and more after the fifth", len(page.Jobs), page.More, page.Bounded, page.Next.ID)
	}

	// Other filters apply to the jobs examined.
	page, err = s.ListJobs(ctx, store.ListFilter{Text: "needle", States: []job.State{job.StateRunning}, Limit: 5, ScanLimit: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Jobs) != 0 || page.More {
		t.Errorf("needle among running jobs: %d jobs, more=%v; want none and the end", len(page.Jobs), page.More)
	}
}

func TestListJobsRefusesAnOverlongText(t *testing.T) {
	t.Parallel()
	s := storetest.Open(t)
	_, err := s.ListJobs(context.Background(), store.ListFilter{Text: strings.Repeat("é", store.MaxListText+1), Limit: 10})
	var fe *job.FieldError
	if !errors.As(err, &fe) || fe.Field != "text" {
		t.Fatalf("ListJobs with %d characters of text: %v, want a field error on text", store.MaxListText+1, err)
	}
	if _, err := s.ListJobs(context.Background(), store.ListFilter{Text: strings.Repeat("é", store.MaxListText), Limit: 10}); err != nil {
		t.Fatalf("ListJobs with %d characters of text: %v", store.MaxListText, err)
	}
}
