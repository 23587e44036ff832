package webhook

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"slices"

	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
)

// Limits and defaults of a webhook.
const (
	DefaultMaxAttempts = 8
	MaxMaxAttempts     = 100
	MaxURLLen          = 2048
	MinSecretLen       = 16
	MaxSecretLen       = 1024
)

// nameRe is a DNS label that starts with a letter (the table's CHECK).
var nameRe = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Validate checks a webhook before it is stored, naming the field that
// breaks a rule (*job.FieldError), and fills in the defaults: max attempts
// 0 becomes DefaultMaxAttempts, repeated types are dropped. The secret is
// checked when set; NewSecret makes one when it is not.
func Validate(w *store.Webhook) error {
	bad := func(field, format string, args ...any) error {
		return &job.FieldError{Field: field, Rule: fmt.Sprintf(format, args...)}
	}
	if !nameRe.MatchString(w.Name) {
		return bad("name", "%q must be 1-63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit", w.Name)
	}
	if len(w.URL) > MaxURLLen {
		return bad("url", "must be at most %d bytes", MaxURLLen)
	}
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return bad("url", "%q must be an http:// or https:// URL with a host", w.URL)
	}
	if len(w.Types) == 0 {
		return bad("types", "at least one event type is required")
	}
	known := eventbus.Types()
	var types []string
	for _, t := range w.Types {
		if !slices.Contains(known, t) {
			return bad("types", "%q is not an event type", t)
		}
		if !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	w.Types = types
	if err := job.ValidateLabels("labels", w.Labels); err != nil {
		return err
	}
	if w.MaxAttempts == 0 {
		w.MaxAttempts = DefaultMaxAttempts
	}
	if w.MaxAttempts < 1 || w.MaxAttempts > MaxMaxAttempts {
		return bad("max_attempts", "must be between 1 and %d, got %d", MaxMaxAttempts, w.MaxAttempts)
	}
	if w.Secret != "" && (len(w.Secret) < MinSecretLen || len(w.Secret) > MaxSecretLen) {
		return bad("secret", "must be %d to %d bytes, got %d", MinSecretLen, MaxSecretLen, len(w.Secret))
	}
	return nil
}

// NewSecret returns a random signing secret: 32 bytes, hex.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}
