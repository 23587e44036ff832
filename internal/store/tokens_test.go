package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hodei-dev/hodei/internal/auth"
	"github.com/hodei-dev/hodei/internal/job"
	"github.com/hodei-dev/hodei/internal/store"
	"github.com/hodei-dev/hodei/internal/store/storetest"
)

func countTokens(t *testing.T, s *store.Store) int {
	t.Helper()
	var n int
	if err := s.SQLForTests().QueryRow(context.Background(), "SELECT count(*) FROM api_tokens").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCreateTokenRefusesBadInput: a bad name, scope or ttl is refused
// naming its field, and nothing is stored; a taken name is refused too.
func TestCreateTokenRefusesBadInput(t *testing.T) {
	s := storetest.Open(t)
	ctx := context.Background()
	if _, _, err := s.CreateToken(ctx, "ci", []string{"jobs:write"}, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		scopes []string
		ttl    time.Duration
		field  string
	}{
		{"", []string{"admin"}, 0, "name"},
		{"-x", []string{"admin"}, 0, "name"},
		{"a b", []string{"admin"}, 0, "name"},
		{strings.Repeat("a", 64), []string{"admin"}, 0, "name"},
		{"ok", nil, 0, "scopes"},
		{"ok", []string{"root"}, 0, "scopes"},
		{"ok", []string{"admin"}, -time.Second, "ttl"},
	} {
		_, _, err := s.CreateToken(ctx, tc.name, tc.scopes, tc.ttl)
		var fe *job.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("CreateToken(%q, %v, %s): %v, want an error about %s", tc.name, tc.scopes, tc.ttl, err, tc.field)
		}
	}
	if _, _, err := s.CreateToken(ctx, "ci", []string{"admin"}, 0); !errors.Is(err, store.ErrTokenExists) {
		t.Errorf("a second token named ci: %v, want ErrTokenExists", err)
	}
	if n := countTokens(t, s); n != 1 {
		t.Errorf("%d tokens stored, want 1", n)
	}
}

// TestVerifyToken: a live token verifies with its scopes; an unknown,
// expired or revoked one does not; its secret is stored nowhere.
func TestVerifyToken(t *testing.T) {
	s := storetest.Open(t)
	ctx := context.Background()
	tok, secret, err := s.CreateToken(ctx, "ci", []string{"jobs:write", "jobs:write", "metrics"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.VerifyToken(ctx, auth.Hash(secret), time.Now())
	if err != nil || got.Name != "ci" || got.ID != tok.ID || len(got.Scopes) != 2 {
		t.Fatalf("VerifyToken: %+v, %v; want ci with jobs:write and metrics", got, err)
	}
	var stored int
	if err := s.SQLForTests().QueryRow(ctx, "SELECT count(*) FROM api_tokens WHERE position($1::bytea IN hash) > 0 OR name = $2", []byte(secret), secret).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 0 {
		t.Errorf("the secret is stored")
	}
	other, _ := auth.NewSecret()
	for what, verify := range map[string]func() error{
		"unknown": func() error { _, err := s.VerifyToken(ctx, auth.Hash(other), time.Now()); return err },
		"expired": func() error {
			_, err := s.VerifyToken(ctx, auth.Hash(secret), time.Now().Add(time.Hour+time.Second))
			return err
		},
	} {
		if err := verify(); !errors.Is(err, store.ErrUnauthenticated) {
			t.Errorf("%s token: %v, want ErrUnauthenticated", what, err)
		}
	}
	if _, err := s.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyToken(ctx, auth.Hash(secret), time.Now()); !errors.Is(err, store.ErrUnauthenticated) {
		t.Errorf("revoked token: %v, want ErrUnauthenticated", err)
	}
	if _, err := s.RevokeToken(ctx, "ci"); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("revoking it again: %v, want ErrNotFound", err)
	}
	list, err := s.ListTokens(ctx)
	if err != nil || len(list) != 1 || list[0].RevokedAt.IsZero() || list[0].ExpiresAt.IsZero() {
		t.Errorf("ListTokens: %+v, %v; want ci, revoked, with its expiry", list, err)
	}
}
