package auth

import (
	"strings"
	"testing"
)

// TestAllows: jobs:write implies jobs:read, admin implies every scope,
// nothing else implies anything.
func TestAllows(t *testing.T) {
	allowed := map[Scope][]Scope{
		JobsRead:   {JobsRead},
		JobsWrite:  {JobsRead, JobsWrite},
		Metrics:    {Metrics},
		SecretsUse: {SecretsUse},
		Admin:      {JobsRead, JobsWrite, Metrics, SecretsUse, Admin},
	}
	for _, have := range Scopes {
		for _, need := range Scopes {
			want := false
			for _, s := range allowed[have] {
				want = want || s == need
			}
			if got := Allows([]Scope{have}, need); got != want {
				t.Errorf("a %s token for %s: %t, want %t", have, need, got, want)
			}
		}
	}
	if Allows(nil, JobsRead) {
		t.Error("no scopes allow jobs:read")
	}
}

func TestParseScopes(t *testing.T) {
	got, err := ParseScopes([]string{"metrics", "jobs:write", "metrics"})
	if err != nil || len(got) != 2 || got[0] != JobsWrite || got[1] != Metrics {
		t.Errorf("ParseScopes: %v, %v; want [jobs:write metrics]", got, err)
	}
	for _, bad := range [][]string{nil, {"root"}, {"jobs:read", "JOBS:WRITE"}} {
		if _, err := ParseScopes(bad); err == nil {
			t.Errorf("ParseScopes(%q): no error", bad)
		}
	}
}

// TestSecrets: a new secret has the shape Plausible checks, its own hash,
// and differs from the next one.
func TestSecrets(t *testing.T) {
	a, ha := NewSecret()
	b, hb := NewSecret()
	if a == b || Equal(ha, hb) || !Equal(ha, Hash(a)) {
		t.Fatalf("secrets %q %q: not distinct or not hashed consistently", a, b)
	}
	for s, want := range map[string]bool{a: true, b: true, "": false, "hodei_": false, strings.TrimPrefix(a, "hodei_"): false, a + "x": false} {
		if got := Plausible(s); got != want {
			t.Errorf("Plausible(%q) = %t, want %t", s, got, want)
		}
	}
}

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{"ci": true, "dev-admin-1": true, "a.b_c": true, "9": true, "": false, "-a": false,
		"a b": false, "a/b": false, strings.Repeat("x", 63): true, strings.Repeat("x", 64): false} {
		if err := CheckName(name); (err == nil) != ok {
			t.Errorf("CheckName(%q): %v, want ok=%t", name, err, ok)
		}
	}
}
