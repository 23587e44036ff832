package web

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"
)

func TestLoginLinkSignsInOnceWithinItsLifetime(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l := NewLogins(time.Hour)
	l.now = func() time.Time { return now }
	ctx := context.Background()

	secret := l.Issue(Principal{Name: "viewer"})
	p, err := l.Login(ctx, secret)
	if err != nil || p.Name != "viewer" || p.Write {
		t.Fatalf("first login: %+v, %v; want viewer without write", p, err)
	}
	if _, err := l.Login(ctx, secret); !errors.Is(err, ErrBadLogin) {
		t.Errorf("second login with the same link: %v, want ErrBadLogin", err)
	}
	if _, err := l.Login(ctx, ""); !errors.Is(err, ErrBadLogin) {
		t.Errorf("empty secret: %v, want ErrBadLogin", err)
	}
	late := l.Issue(Principal{Name: "admin", Write: true})
	now = now.Add(time.Hour + time.Second)
	if _, err := l.Login(ctx, late); !errors.Is(err, ErrBadLogin) {
		t.Errorf("login after the link's lifetime: %v, want ErrBadLogin", err)
	}
}

func TestSessionsExpire(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := newSessions(time.Minute)
	s.now = func() time.Time { return now }
	cookie, started := s.start(Principal{Name: "admin", Write: true})
	got, ok := s.get(cookie)
	if !ok || got.csrf != started.csrf || !got.p.Write {
		t.Fatalf("fresh session: %+v %v", got, ok)
	}
	if _, ok := s.get(cookie + "0"); ok {
		t.Error("a different cookie found the session")
	}
	now = now.Add(time.Minute + time.Second)
	if _, ok := s.get(cookie); ok {
		t.Error("an expired session is still valid")
	}
	cookie, _ = s.start(Principal{Name: "viewer"})
	s.end(cookie)
	if _, ok := s.get(cookie); ok {
		t.Error("an ended session is still valid")
	}
}

func TestCrossSite(t *testing.T) {
	for _, tc := range []struct {
		origin, fetchSite string
		refused           bool
	}{
		{"", "", false}, // a client that sends neither (curl)
		{"http://127.0.0.1:7070", "same-origin", false}, // the dashboard's own page
		{"http://127.0.0.1:7070", "", false},
		{"http://127.0.0.1:9999", "", true}, // another origin of the same site
		{"http://localhost:7070", "", true}, // another host
		{"", "same-site", true},             // Sec-Fetch-Site alone
		{"", "cross-site", true},
		{"http://127.0.0.1:7070", "cross-site", true},
		{"null", "", true},
	} {
		r := httptest.NewRequest("POST", "http://127.0.0.1:7070/ui/api/hodei.v1.JobService/CancelJob", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if tc.fetchSite != "" {
			r.Header.Set("Sec-Fetch-Site", tc.fetchSite)
		}
		if reason := crossSite(r); (reason != "") != tc.refused {
			t.Errorf("Origin %q Sec-Fetch-Site %q: reason %q, want refused=%v", tc.origin, tc.fetchSite, reason, tc.refused)
		}
	}
}
