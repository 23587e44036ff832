// Package auth holds the vocabulary of API tokens: their scopes, what each
// scope allows, and their secrets (generated, hashed, compared). It is
// standard library only; the store keeps tokens and the server checks
// them on every call.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Scope is what a token may do.
type Scope string

// The scopes. JobsWrite implies JobsRead; Admin implies every scope.
const (
	JobsRead   Scope = "jobs:read"   // read jobs, their logs and events
	JobsWrite  Scope = "jobs:write"  // submit, cancel and retry jobs
	Metrics    Scope = "metrics"     // scrape /metrics
	SecretsUse Scope = "secrets:use" // reference secrets in the jobs one submits
	Admin      Scope = "admin"       // providers, job types, webhooks, tokens, secrets, dead letters
)

// Scopes lists every scope.
var Scopes = []Scope{JobsRead, JobsWrite, Metrics, SecretsUse, Admin}

// ParseScopes validates scope names, drops duplicates and returns them
// sorted. Its errors say what is wrong, not where (the caller names the
// field).
func ParseScopes(names []string) ([]Scope, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("at least one scope is required (one of %s)", scopeList())
	}
	var out []Scope
	for _, n := range names {
		s := Scope(strings.TrimSpace(n))
		if !slices.Contains(Scopes, s) {
			return nil, fmt.Errorf("%q is not a scope (one of %s)", n, scopeList())
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out, nil
}

func scopeList() string {
	names := make([]string, len(Scopes))
	for i, s := range Scopes {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// Allows reports whether a token with scopes may do what need requires.
func Allows(scopes []Scope, need Scope) bool {
	for _, s := range scopes {
		if s == need || s == Admin || (s == JobsWrite && need == JobsRead) {
			return true
		}
	}
	return false
}

// secretPrefix marks Hodei's tokens, so that a leaked one is recognisable
// (secret scanners, logs).
const secretPrefix = "hodei_"

// secretBytes is the entropy of a secret: 256 bits.
const secretBytes = 32

// NewSecret returns a new random token secret and its hash.
func NewSecret() (secret string, hash []byte) {
	b := make([]byte, secretBytes)
	rand.Read(b) // never fails (crypto/rand)
	secret = secretPrefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, Hash(secret)
}

// Hash is what the store keeps of a secret: its SHA-256. A secret carries
// 256 random bits, so a fast hash is enough; nothing can be guessed.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Equal compares two hashes in constant time.
func Equal(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// Plausible reports whether s has the shape of a secret, checked before
// any lookup so that garbage costs nothing.
func Plausible(s string) bool {
	rest, ok := strings.CutPrefix(s, secretPrefix)
	return ok && len(rest) == base64.RawURLEncoding.EncodedLen(secretBytes)
}

// validName matches the names of tokens (as the schema's CHECK does).
func validName(n string) bool {
	if n == "" || len(n) > 63 {
		return false
	}
	for i, c := range n {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("._-", c)) {
			return false
		}
	}
	return true
}

// CheckName validates a token name.
func CheckName(name string) error {
	if !validName(name) {
		return fmt.Errorf("%q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or a digit", name)
	}
	return nil
}

// WithBearer returns a client that sends every request of c with the
// header "authorization: Bearer <token>".
func WithBearer(c *http.Client, token string) *http.Client {
	out := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	out.Transport = bearerTransport{base: base, header: "Bearer " + token}
	return &out
}

type bearerTransport struct {
	base   http.RoundTripper
	header string
}

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", t.header)
	return t.base.RoundTrip(r)
}

// CloseIdleConnections closes the idle connections of the wrapped
// transport (http.Client.CloseIdleConnections reaches it).
func (t bearerTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
