package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/store"
)

// tokenCache verifies API tokens: a hit is a SHA-256 and a map lookup; a
// miss reads the token's row. Revocations reach every replica's cache by
// a NOTIFY on store.TokensChannel (sent in the revoking transaction), and
// the whole cache is dropped whenever the listener reconnects (it may
// have missed one). Expiry is checked on every call; an entry is also
// re-read after tokenRecheck as a bound on any other miss.
type tokenCache struct {
	store *store.Store
	now   func() time.Time

	mu      sync.RWMutex
	entries map[[sha256.Size]byte]*cachedToken
	gen     uint64 // bumped by every invalidation
	// streams holds the open streams by their token's hash: a revoke
	// ends them.
	streams map[[sha256.Size]byte]map[*context.CancelCauseFunc]struct{}
}

// tokenRecheck bounds how long a verified token is trusted without
// reading its row again.
const tokenRecheck = time.Minute

// usageResolution is how often a token's last use is written, at most.
const usageResolution = time.Minute

// cachedToken is a verified token.
type cachedToken struct {
	hash       [sha256.Size]byte
	id, name   string
	scopes     []auth.Scope
	expires    time.Time // zero: never
	verifiedAt time.Time
	lastUse    atomic.Int64 // unix nanoseconds of the last call
	written    atomic.Int64 // lastUse as last written to the store
}

func newTokenCache(st *store.Store) *tokenCache {
	return &tokenCache{store: st, now: time.Now, entries: map[[sha256.Size]byte]*cachedToken{},
		streams: map[[sha256.Size]byte]map[*context.CancelCauseFunc]struct{}{}}
}

// watch returns a context for a stream made with t that ends when t is
// revoked (a NOTIFY of its hash) or expires; stop releases it.
func (c *tokenCache) watch(ctx context.Context, t *cachedToken) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	stopDeadline := func() {}
	if !t.expires.IsZero() {
		ctx, stopDeadline = context.WithDeadlineCause(ctx, t.expires, errTokenExpired)
	}
	key := &cancel
	c.mu.Lock()
	if c.streams[t.hash] == nil {
		c.streams[t.hash] = map[*context.CancelCauseFunc]struct{}{}
	}
	c.streams[t.hash][key] = struct{}{}
	c.mu.Unlock()
	return ctx, func() {
		c.mu.Lock()
		delete(c.streams[t.hash], key)
		if len(c.streams[t.hash]) == 0 {
			delete(c.streams, t.hash)
		}
		c.mu.Unlock()
		stopDeadline()
		cancel(nil)
	}
}

// invalidate drops the token whose hash is hexHash, a revoked one, and
// ends its streams; "" drops every token (the listener reconnected and
// may have missed revocations: tokens are read again at their next call,
// while open streams go on).
func (c *tokenCache) invalidate(hexHash string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if hexHash == "" {
		clear(c.entries)
		return
	}
	b, err := hex.DecodeString(hexHash)
	if err != nil || len(b) != sha256.Size {
		clear(c.entries) // not ours to interpret: be safe
		return
	}
	hash := [sha256.Size]byte(b)
	delete(c.entries, hash)
	for cancel := range c.streams[hash] {
		(*cancel)(errTokenRevoked)
	}
}

// check verifies the Authorization header value h and that its token
// allows need. Its errors are connect errors: unauthenticated for a
// missing or bad token, permission_denied for a missing scope.
func (c *tokenCache) check(ctx context.Context, h string, need auth.Scope) (*cachedToken, error) {
	secret, err := bearer(h)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, err)
	}
	if !auth.Plausible(secret) {
		return nil, connect.NewError(connect.CodeUnauthenticated, errBadToken)
	}
	t, err := c.verify(ctx, secret)
	if err != nil {
		if errors.Is(err, store.ErrUnauthenticated) {
			return nil, connect.NewError(connect.CodeUnauthenticated, errBadToken)
		}
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	if !auth.Allows(t.scopes, need) {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("token %q has scopes %v; this call needs %s", t.name, t.scopes, need))
	}
	return t, nil
}

// verify returns the live token of secret.
func (c *tokenCache) verify(ctx context.Context, secret string) (*cachedToken, error) {
	hash := sha256.Sum256([]byte(secret))
	now := c.now()
	c.mu.RLock()
	t := c.entries[hash]
	gen := c.gen
	c.mu.RUnlock()
	if t != nil && auth.Equal(t.hash[:], hash[:]) && now.Sub(t.verifiedAt) < tokenRecheck {
		if !t.expires.IsZero() && !now.Before(t.expires) {
			return nil, errBadToken
		}
		t.lastUse.Store(now.UnixNano())
		return t, nil
	}
	st, err := c.store.VerifyToken(ctx, hash[:], now)
	if err != nil {
		if errors.Is(err, store.ErrUnauthenticated) {
			c.mu.Lock()
			delete(c.entries, hash)
			c.mu.Unlock()
		}
		return nil, err
	}
	t = &cachedToken{hash: hash, id: st.ID, name: st.Name, scopes: st.Scopes, expires: st.ExpiresAt, verifiedAt: now}
	t.lastUse.Store(now.UnixNano())
	c.mu.Lock()
	if old := c.entries[hash]; old != nil {
		t.written.Store(old.written.Load())
	}
	// A revocation that arrived while the row was read wins: the token is
	// used for this call (it was live when read) but not remembered.
	if c.gen == gen {
		c.entries[hash] = t
	}
	c.mu.Unlock()
	return t, nil
}

// flushUsage writes the last use of tokens used since their last write
// more than usageResolution ago.
func (c *tokenCache) flushUsage(ctx context.Context) error {
	used := map[string]time.Time{}
	var due []*cachedToken
	c.mu.RLock()
	for _, t := range c.entries {
		last, written := t.lastUse.Load(), t.written.Load()
		if last > written && time.Duration(last-written) >= usageResolution {
			used[t.id] = time.Unix(0, last)
			due = append(due, t)
		}
	}
	c.mu.RUnlock()
	if err := c.store.TouchTokens(ctx, used); err != nil {
		return err
	}
	for _, t := range due {
		t.written.Store(t.lastUse.Load())
	}
	return nil
}
