package web

import (
	"net/http"
	"net/url"
)

// access is what a procedure asks of a principal.
type access int

const (
	read  access = iota
	write        // Principal.Write
	admin        // Principal.Admin
)

// Procedures the dashboard may call, and what each asks.
var procedures = map[string]access{
	"hodei.v1.JobService/GetJob":              read,
	"hodei.v1.JobService/ListJobs":            read,
	"hodei.v1.JobService/WatchJob":            read,
	"hodei.v1.JobService/GetJobLogs":          read,
	"hodei.v1.JobService/ExplainJob":          read,
	"hodei.v1.JobService/GetJobStats":         read,
	"hodei.v1.JobService/ListJobHistory":      read,
	"hodei.v1.EventService/Subscribe":         read,
	"hodei.v1.ProviderService/ListProviders":  read,
	"hodei.v1.ProviderService/GetProvider":    read,
	"hodei.v1.ProviderService/ListWorkers":    read,
	"hodei.v1.JobService/CancelJob":           write,
	"hodei.v1.JobService/RetryJob":            write,
	"hodei.v1.ProviderService/UpdateProvider": admin,
}

// csrfHeader carries the session's form token on every API call. A
// cross-site page cannot set it without a CORS preflight, which the
// dashboard never answers.
const csrfHeader = "X-Hodei-Csrf"

// proxy passes a page's Connect call (JSON protocol, unary or server
// stream) to the API for the session's principal. It refuses calls
// without a session, from another origin, without the session's form
// token, to procedures outside the dashboard's list, and writes for a
// principal that may only read.
func (u *UI) proxy(w http.ResponseWriter, r *http.Request) {
	proc := r.PathValue("service") + "/" + r.PathValue("method")
	need, known := procedures[proc]
	if !known {
		http.Error(w, "procedure "+proc+" is not available to the dashboard", http.StatusNotFound)
		return
	}
	sess, ok := u.session(r)
	if !ok {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	if reason := crossSite(r); reason != "" {
		u.log.Warn("dashboard call refused", "procedure", proc, "reason", reason)
		http.Error(w, "refused: "+reason, http.StatusForbidden)
		return
	}
	if !sameSecret(r.Header.Get(csrfHeader), sess.csrf) {
		http.Error(w, "refused: header "+csrfHeader+" is missing or does not match the session", http.StatusForbidden)
		return
	}
	if (need == write && !sess.p.Write) || (need == admin && !sess.p.Admin) {
		http.Error(w, "refused: "+sess.p.Name+" may not call "+proc, http.StatusForbidden)
		return
	}
	out := r.Clone(r.Context())
	out.URL = &url.URL{Path: "/" + proc}
	out.RequestURI = ""
	out.Header.Del("Cookie")
	out.Header.Del(csrfHeader)
	out.Header.Del("Authorization")
	if sess.p.Token != "" {
		out.Header.Set("Authorization", "Bearer "+sess.p.Token)
	}
	u.cfg.API.ServeHTTP(w, out)
}

// crossSite says why a request does not come from the dashboard's own
// pages, or "" when it does.
func crossSite(r *http.Request) string {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return "Sec-Fetch-Site is " + s
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	o, err := url.Parse(origin)
	if err != nil || o.Host != r.Host {
		return "Origin " + origin + " is not this server"
	}
	return ""
}
