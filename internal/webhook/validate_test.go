package webhook_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/webhook"
)

func TestValidate(t *testing.T) {
	good := func() store.Webhook {
		return store.Webhook{Name: "ci-1", URL: "https://ci.example.com/hook", Types: []string{"JobFailed"}, Labels: map[string]string{"team": "a"}}
	}
	for _, c := range []struct {
		name   string
		change func(w *store.Webhook)
		field  string // "" = valid
	}{
		{"valid", func(*store.Webhook) {}, ""},
		{"http", func(w *store.Webhook) { w.URL = "http://10.0.0.1:8080/x?y=z" }, ""},
		{"63 characters", func(w *store.Webhook) { w.Name = "a" + strings.Repeat("b", 62) }, ""},
		{"secret of 16 bytes", func(w *store.Webhook) { w.Secret = strings.Repeat("s", 16) }, ""},
		{"no name", func(w *store.Webhook) { w.Name = "" }, "name"},
		{"uppercase name", func(w *store.Webhook) { w.Name = "CI" }, "name"},
		{"name ending in -", func(w *store.Webhook) { w.Name = "ci-" }, "name"},
		{"name starting with a digit", func(w *store.Webhook) { w.Name = "1ci" }, "name"},
		{"name of 64", func(w *store.Webhook) { w.Name = "a" + strings.Repeat("b", 63) }, "name"},
		{"no url", func(w *store.Webhook) { w.URL = "" }, "url"},
		{"ftp", func(w *store.Webhook) { w.URL = "ftp://ci.example.com/" }, "url"},
		{"no host", func(w *store.Webhook) { w.URL = "https:///hook" }, "url"},
		{"relative", func(w *store.Webhook) { w.URL = "/hook" }, "url"},
		{"opaque", func(w *store.Webhook) { w.URL = "http:ci.example.com" }, "url"},
		{"bad escape", func(w *store.Webhook) { w.URL = "https://ci.example.com/%zz" }, "url"},
		{"long url", func(w *store.Webhook) { w.URL = "https://ci.example.com/" + strings.Repeat("x", 2048) }, "url"},
		{"no types", func(w *store.Webhook) { w.Types = nil }, "types"},
		{"unknown type", func(w *store.Webhook) { w.Types = []string{"JobFailed", "JobExploded"} }, "types"},
		{"label key", func(w *store.Webhook) { w.Labels = map[string]string{"-x": "a"} }, "labels"},
		{"label value", func(w *store.Webhook) { w.Labels = map[string]string{"x": "a\x00"} }, "labels.x"},
		{"max attempts 0 is the default", func(w *store.Webhook) { w.MaxAttempts = 0 }, ""},
		{"negative max attempts", func(w *store.Webhook) { w.MaxAttempts = -1 }, "max_attempts"},
		{"max attempts over 100", func(w *store.Webhook) { w.MaxAttempts = 101 }, "max_attempts"},
		{"short secret", func(w *store.Webhook) { w.Secret = "short" }, "secret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := good()
			c.change(&w)
			err := webhook.Validate(&w)
			var fe *job.FieldError
			switch {
			case c.field == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field):
				t.Errorf("Validate: %v, want an error naming %s", err, c.field)
			}
		})
	}
}

func TestValidateFillsDefaults(t *testing.T) {
	w := store.Webhook{Name: "ci", URL: "https://x", Types: []string{"JobFailed", "JobCompleted", "JobFailed"}}
	if err := webhook.Validate(&w); err != nil {
		t.Fatal(err)
	}
	want := store.Webhook{Name: "ci", URL: "https://x", Types: []string{"JobFailed", "JobCompleted"}, MaxAttempts: webhook.DefaultMaxAttempts}
	if diff := cmp.Diff(want, w); diff != "" {
		t.Errorf("validated webhook (-want +got):\n%s", diff)
	}
	if s := webhook.NewSecret(); len(s) != 64 || s == webhook.NewSecret() {
		t.Errorf("NewSecret() = %q: want 64 hex digits, new each time", s)
	}
}
