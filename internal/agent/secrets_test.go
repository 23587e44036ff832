package agent

import (
	"strings"
	"testing"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/redact"
)

// TestSelfTestNeedsTheCanaryMasked: the redactor passes its self-test
// only when it masks the canary in every form, split across two writes.
func TestSelfTestNeedsTheCanaryMasked(t *testing.T) {
	canary := []byte("hc_0123456789abcdefghij")
	if selfTest(redact.NewSet([]redact.Secret{{Name: "other", Value: []byte("unrelated-value")}}), canary) {
		t.Error("a redactor without the canary passed its self-test")
	}
	if !selfTest(redact.NewSet([]redact.Secret{{Name: "canary", Value: canary}}), canary) {
		t.Error("a redactor with the canary failed its self-test")
	}
}

// TestAttemptWithSecretsNeedsShimAndCanary: an attempt with secrets does
// not start on an agent without an exec shim, nor without a canary, nor
// when the server could not resolve them; the reason never holds a value.
func TestAttemptWithSecretsNeedsShimAndCanary(t *testing.T) {
	secrets := []*hodeiv1.SecretValue{{Name: "db", Env: "X", Value: []byte("value-1234")}}
	for want, tc := range map[string]struct {
		shim []string
		run  *hodeiv1.RunJob
	}{
		"no exec shim":         {nil, &hodeiv1.RunJob{Secrets: secrets, Canary: "hc_abcdefghijklmnopqrstu"}},
		"without a canary":     {[]string{"hodei", ShimCommand}, &hodeiv1.RunJob{Secrets: secrets}},
		"secret db: not found": {[]string{"hodei", ShimCommand}, &hodeiv1.RunJob{SecretError: "secret db: not found"}},
	} {
		a := &Agent{cfg: Config{ExecShim: tc.shim}}
		red, msg := a.prepareSecrets(tc.run)
		if red != nil || !strings.Contains(msg, want) || strings.Contains(msg, "value-1234") {
			t.Errorf("%s: redactor %v, reason %q", want, red != nil, msg)
		}
	}
	a := &Agent{cfg: Config{ExecShim: []string{"hodei", ShimCommand}}}
	red, msg := a.prepareSecrets(&hodeiv1.RunJob{Secrets: secrets, Canary: "hc_abcdefghijklmnopqrstu"})
	if red == nil || msg != "" || !strings.Contains(string(red.input), `"X=value-1234"`) {
		t.Fatalf("prepare: %v %q", red, msg)
	}
}
