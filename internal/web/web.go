package web

import (
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the dashboard is served.
const Prefix = "/ui/"

const cookieName = "hodei_session"

// Config configures the dashboard.
type Config struct {
	// API serves the Connect services the dashboard calls on the
	// session's behalf; required.
	API http.Handler
	// Auth turns login secrets into principals; required.
	Auth Authenticator
	// SessionTTL is how long a sign-in lasts; default 12h.
	SessionTTL time.Duration
	Logger     *slog.Logger
}

// UI is the dashboard's HTTP handler.
type UI struct {
	cfg      Config
	sessions *sessions
	pages    map[string]*template.Template
	static   http.Handler
	mux      *http.ServeMux
	log      *slog.Logger
}

// New returns the dashboard.
func New(cfg Config) (*UI, error) {
	if cfg.API == nil || cfg.Auth == nil {
		return nil, errors.New("web: API and Auth are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"jobs", "job", "workers", "events", "overview", "login"} {
		t, err := template.New("layout.html").ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	u := &UI{cfg: cfg, sessions: newSessions(cfg.SessionTTL), pages: pages, log: cfg.Logger,
		static: http.StripPrefix(Prefix+"static/", http.FileServerFS(sub))}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/login", u.login)
	mux.HandleFunc("POST /ui/login", u.login)
	mux.HandleFunc("POST /ui/logout", u.logout)
	mux.Handle("GET /ui/static/", u.static)
	mux.HandleFunc("POST /ui/api/{service}/{method}", u.proxy)
	mux.HandleFunc("GET /ui/{$}", u.page("jobs"))
	mux.HandleFunc("GET /ui/jobs/{id}", u.page("job"))
	mux.HandleFunc("GET /ui/jobs/{id}/log", u.download)
	mux.HandleFunc("GET /ui/workers", u.page("workers"))
	mux.HandleFunc("GET /ui/events", u.page("events"))
	mux.HandleFunc("GET /ui/overview", u.page("overview"))
	u.mux = mux
	return u, nil
}

// ServeHTTP serves everything under Prefix.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	secure(w)
	u.mux.ServeHTTP(w, r)
}

// secure sets the headers every dashboard answer carries: no inline
// script, no framing, no referrer (a login link must not leak).
func secure(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// pageData is what every page template sees.
type pageData struct {
	Page  string
	Title string
	User  string
	Write bool
	Admin bool
	CSRF  string
	JobID string
	Error string
}

func (u *UI) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, ok := u.session(r)
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			u.render(w, "login", pageData{Page: "login", Title: "Sign in"})
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		d := pageData{Page: name, Title: strings.ToUpper(name[:1]) + name[1:], User: sess.p.Name, Write: sess.p.Write, Admin: sess.p.Admin, CSRF: sess.csrf}
		if name == "job" {
			d.JobID = r.PathValue("id")
			d.Title = "Job " + d.JobID
		}
		u.render(w, name, d)
	}
}

func (u *UI) render(w http.ResponseWriter, name string, d pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := u.pages[name].Execute(w, d); err != nil {
		u.log.Warn("render page", "page", name, "err", err)
	}
}

func (u *UI) session(r *http.Request) (session, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return session{}, false
	}
	return u.sessions.get(c.Value)
}

// login spends a login link's secret, or checks an API token (the form
// of the sign-in page), and opens a session. The answer is
// a page that moves on to the dashboard itself, so that the strict
// cookie is sent from the first page on.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	p, err := u.cfg.Auth.Login(r.Context(), r.FormValue("t"))
	if err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		u.render(w, "login", pageData{Page: "login", Title: "Sign in", Error: err.Error()})
		return
	}
	cookie, _ := u.sessions.start(p)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: cookie, Path: Prefix, HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(u.cfg.SessionTTL / time.Second)})
	u.log.Info("dashboard sign-in", "user", p.Name, "write", p.Write, "admin", p.Admin)
	u.render(w, "login", pageData{Page: "login", Title: "Signed in", User: p.Name})
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(cookieName)
	if sess, ok := u.session(r); ok && sameSecret(r.FormValue("csrf"), sess.csrf) && err == nil {
		u.sessions.end(c.Value)
	} else {
		http.Error(w, "sign-out refused: no session or a bad form token", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Path: Prefix, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}
