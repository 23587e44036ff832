package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzValidate feeds arbitrary JSON specs to Validate: it must never
// panic, must reject with a FieldError naming a field, and a spec it
// accepts must be runnable (a non-empty argv without NUL bytes) and
// storable (its JSON, as the store writes it, holds no NUL: PostgreSQL's
// jsonb refuses \u0000).
func FuzzValidate(f *testing.F) {
	for _, seed := range []string{
		`{"command":["true"]}`,
		`{"script":"echo hi","interpreter":"/bin/bash"}`,
		`{"command":["x"],"env":{"A":"1"},"labels":{"gpu":"true"},"timeout":1000000000}`,
		`{"command":[""]}`,
		`{"command":["a"],"retry":{"max_attempts":3,"retryable_exit_codes":[7],"jitter":0.5}}`,
		`{}`,
		`{"command":["true"],"name":"a\u0000b"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Spec
		if json.Unmarshal(data, &s) != nil {
			return
		}
		err := s.Validate()
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("Validate error %v is not a FieldError naming a field", err)
			}
			return
		}
		argv := s.Argv()
		if len(argv) == 0 || argv[0] == "" {
			t.Fatalf("accepted spec %s has argv %q", data, argv)
		}
		if b, err := json.Marshal(s); err != nil || bytes.Contains(b, []byte(`\u0000`)) {
			t.Fatalf("accepted spec %s is not storable: %s %v", data, b, err)
		}
	})
}
