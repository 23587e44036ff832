// Package web is the dashboard served under /ui/ by the same server as
// the API: jobs with live updates, one job with its attempts and live
// log, providers, and a tail of the event log.
//
// Pages are html/template layouts with a little hand-written JavaScript,
// all embedded in the binary (no build step, nothing fetched from
// elsewhere). The scripts call the API's Connect procedures with the
// JSON protocol, server streams for live views, through /ui/api/: there
// the dashboard checks the session cookie (HttpOnly, Secure,
// SameSite=Strict), the page's origin and the session's form token in a
// header, and refuses writes to a principal that may only read, before
// it passes the call to the API. A session is opened by a one-time login
// link; who it acts for comes from an Authenticator.
//
// Sessions live in the memory of the replica that opened them.
package web
