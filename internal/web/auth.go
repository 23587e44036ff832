package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"sync"
	"time"
)

// ErrBadLogin is returned for a login secret that is unknown, used or
// expired.
var ErrBadLogin = errors.New("sign-in link or API token unknown, already used, revoked or expired")

// Principal is who a session acts for.
type Principal struct {
	Name string
	// Write allows cancelling and retrying jobs; Admin changing providers.
	Write, Admin bool
	// Token, when set, is sent to the API as a bearer token on every
	// call the session makes.
	Token string
}

// Authenticator turns the secret of a login link into a principal.
type Authenticator interface {
	Login(ctx context.Context, secret string) (Principal, error)
}

// Logins issues one-time login links: each secret signs in once, within
// its lifetime, as the principal it was issued for.
type Logins struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	pending map[[32]byte]pendingLogin // by SHA-256 of the secret
}

type pendingLogin struct {
	p       Principal
	expires time.Time
}

// NewLogins returns a set of one-time logins valid for ttl (default 24h).
func NewLogins(ttl time.Duration) *Logins {
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	return &Logins{ttl: ttl, now: time.Now, pending: map[[32]byte]pendingLogin{}}
}

// Issue returns the secret of a new one-time login for p.
func (l *Logins) Issue(p Principal) string {
	secret := randomHex(24)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for k, v := range l.pending {
		if now.After(v.expires) {
			delete(l.pending, k)
		}
	}
	l.pending[sha256.Sum256([]byte(secret))] = pendingLogin{p: p, expires: now.Add(l.ttl)}
	return secret
}

// Login spends a one-time secret.
func (l *Logins) Login(_ context.Context, secret string) (Principal, error) {
	key := sha256.Sum256([]byte(secret))
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.pending[key]
	if !ok || l.now().After(v.expires) {
		return Principal{}, ErrBadLogin
	}
	delete(l.pending, key)
	return v.p, nil
}

// session is a signed-in browser.
type session struct {
	p       Principal
	csrf    string // sent back by the page's script on every API call
	expires time.Time
}

// sessions holds this process's sessions by the SHA-256 of their cookie.
type sessions struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[[32]byte]session
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, now: time.Now, m: map[[32]byte]session{}}
}

// start opens a session for p and returns its cookie value.
func (s *sessions) start(p Principal) (cookie string, sess session) {
	cookie = randomHex(32)
	sess = session{p: p, csrf: randomHex(24), expires: s.now().Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, v := range s.m {
		if now.After(v.expires) {
			delete(s.m, k)
		}
	}
	s.m[sha256.Sum256([]byte(cookie))] = sess
	return cookie, sess
}

func (s *sessions) get(cookie string) (session, bool) {
	if cookie == "" {
		return session{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[sha256.Sum256([]byte(cookie))]
	if !ok || s.now().After(v.expires) {
		return session{}, false
	}
	return v, true
}

func (s *sessions) end(cookie string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sha256.Sum256([]byte(cookie)))
}

// sameSecret compares two secrets in constant time.
func sameSecret(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
