package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-dev/hodei/api/gen/hodei/v1"
	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/eventbus"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store/db"
)

// Token is an API token as stored: never its secret, only the secret's
// hash. Zero times are unset.
type Token struct {
	ID         string
	Name       string
	Scopes     []auth.Scope
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never expires
	RevokedAt  time.Time
	LastUsedAt time.Time
}

// ErrTokenExists is returned by CreateToken for a name in use.
var ErrTokenExists = errors.New("a token of that name exists (names stay taken after a revoke)")

// TokensChannel is the NOTIFY channel that announces a revoked token, with
// the hex SHA-256 of its secret as payload: every replica drops it from
// its cache of verified tokens at once.
const TokensChannel = "hodei_tokens"

// CreateToken validates and stores a new token and publishes
// TokenCreated; it returns the token and its secret, which is stored
// nowhere. ttl 0 means the token does not expire. A name in use (revoked
// tokens included) is an error wrapping ErrTokenExists.
func (s *Store) CreateToken(ctx context.Context, name string, scopeNames []string, ttl time.Duration) (Token, string, error) {
	if err := auth.CheckName(name); err != nil {
		return Token{}, "", &job.FieldError{Field: "name", Rule: err.Error()}
	}
	scopes, err := auth.ParseScopes(scopeNames)
	if err != nil {
		return Token{}, "", &job.FieldError{Field: "scopes", Rule: err.Error()}
	}
	if ttl < 0 {
		return Token{}, "", &job.FieldError{Field: "ttl", Rule: fmt.Sprintf("must not be negative, got %s", ttl)}
	}
	secret, hash := auth.NewSecret()
	t := Token{ID: uuid.New().String(), Name: name, Scopes: scopes, CreatedAt: s.now().UTC().Truncate(time.Microsecond)}
	var expires *time.Time
	if ttl > 0 {
		t.ExpiresAt = t.CreatedAt.Add(ttl)
		expires = &t.ExpiresAt
	}
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		_, err := q.InsertToken(ctx, db.InsertTokenParams{ID: uuid.MustParse(t.ID), Name: name, Hash: hash, Scopes: scopeStrings(scopes),
			CreatedAt: t.CreatedAt, ExpiresAt: expires})
		if IsNoRows(err) {
			return fmt.Errorf("create token %s: %w", name, ErrTokenExists)
		}
		if err != nil {
			return fmt.Errorf("create token %s: %w", name, err)
		}
		ev := &hodeiv1.TokenCreated{Id: t.ID, Name: name, Scopes: scopeStrings(scopes)}
		if expires != nil {
			ev.ExpiresAt = timestamppb.New(*expires)
		}
		if _, err := eventbus.Publish(ctx, tx, eventbus.New("token", t.ID, ev)); err != nil {
			return fmt.Errorf("create token %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return Token{}, "", err
	}
	return t, secret, nil
}

// VerifyToken returns the token whose secret has hash if it is neither
// revoked nor expired at now, else an error wrapping ErrUnauthenticated.
func (s *Store) VerifyToken(ctx context.Context, hash []byte, now time.Time) (Token, error) {
	r, err := s.q.TokenByHash(ctx, db.TokenByHashParams{Hash: hash, Now: now})
	if IsNoRows(err) {
		return Token{}, fmt.Errorf("token unknown, revoked or expired: %w", ErrUnauthenticated)
	}
	if err != nil {
		return Token{}, fmt.Errorf("verify token: %w", err)
	}
	t := Token{ID: r.ID.String(), Name: r.Name, Scopes: make([]auth.Scope, len(r.Scopes))}
	for i, sc := range r.Scopes {
		t.Scopes[i] = auth.Scope(sc)
	}
	if r.ExpiresAt != nil {
		t.ExpiresAt = *r.ExpiresAt
	}
	return t, nil
}

// ListTokens returns every token, revoked ones included, by name.
func (s *Store) ListTokens(ctx context.Context) ([]Token, error) {
	rows, err := s.q.ListTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	out := make([]Token, len(rows))
	for i, r := range rows {
		t := Token{ID: r.ID.String(), Name: r.Name, CreatedAt: r.CreatedAt}
		for _, sc := range r.Scopes {
			t.Scopes = append(t.Scopes, auth.Scope(sc))
		}
		t.ExpiresAt, t.RevokedAt, t.LastUsedAt = deref(r.ExpiresAt), deref(r.RevokedAt), deref(r.LastUsedAt)
		out[i] = t
	}
	return out, nil
}

// RevokeToken revokes the token named or identified by ref, publishes
// TokenRevoked and NOTIFYs TokensChannel in the same transaction. An
// unknown or already revoked token is an error wrapping job.ErrNotFound.
func (s *Store) RevokeToken(ctx context.Context, ref string) (Token, error) {
	var t Token
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		now := s.now().UTC()
		r, err := q.RevokeToken(ctx, db.RevokeTokenParams{Now: now, Ref: ref})
		if IsNoRows(err) {
			return fmt.Errorf("token %q (no token of that name or id is unrevoked): %w", ref, job.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("revoke token %s: %w", ref, err)
		}
		t = Token{ID: r.ID.String(), Name: r.Name, RevokedAt: now}
		return announceRevoked(ctx, q, tx, []db.RevokeTokenRow{r})
	})
	return t, err
}

// RevokeTokensWithPrefix revokes every unrevoked token whose name starts
// with prefix (dev mode replaces its token at every start) and returns
// how many it revoked.
func (s *Store) RevokeTokensWithPrefix(ctx context.Context, prefix string) (int, error) {
	var n int
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		rows, err := q.RevokeTokensByPrefix(ctx, db.RevokeTokensByPrefixParams{Now: s.now().UTC(), Prefix: prefix})
		if err != nil {
			return fmt.Errorf("revoke tokens %s*: %w", prefix, err)
		}
		n = len(rows)
		revoked := make([]db.RevokeTokenRow, len(rows))
		for i, r := range rows {
			revoked[i] = db.RevokeTokenRow(r)
		}
		return announceRevoked(ctx, q, tx, revoked)
	})
	return n, err
}

// announceRevoked publishes TokenRevoked and NOTIFYs the hashes of
// revoked tokens.
func announceRevoked(ctx context.Context, q *db.Queries, tx pgx.Tx, rows []db.RevokeTokenRow) error {
	if len(rows) == 0 {
		return nil
	}
	events := make([]eventbus.Event, len(rows))
	hashes := make([]string, len(rows))
	for i, r := range rows {
		events[i] = eventbus.New("token", r.ID.String(), &hodeiv1.TokenRevoked{Id: r.ID.String(), Name: r.Name})
		hashes[i] = hex.EncodeToString(r.Hash)
	}
	if _, err := eventbus.Publish(ctx, tx, events...); err != nil {
		return fmt.Errorf("revoke tokens: %w", err)
	}
	if err := q.NotifyMany(ctx, db.NotifyManyParams{Channel: TokensChannel, Payloads: hashes}); err != nil {
		return fmt.Errorf("revoke tokens: notify: %w", err)
	}
	return nil
}

// TouchTokens records when tokens (by id) were last used.
func (s *Store) TouchTokens(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	var p db.TouchTokensParams
	for id, at := range used {
		u, err := uuid.Parse(id)
		if err != nil {
			return fmt.Errorf("touch tokens: %w", err)
		}
		p.Ids, p.Ats = append(p.Ids, u), append(p.Ats, at)
	}
	if err := s.q.TouchTokens(ctx, p); err != nil {
		return fmt.Errorf("touch tokens: %w", err)
	}
	return nil
}

func scopeStrings(scopes []auth.Scope) []string {
	out := make([]string, len(scopes))
	for i, s := range scopes {
		out[i] = string(s)
	}
	return out
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
