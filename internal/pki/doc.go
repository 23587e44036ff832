// Package pki is Hodei's certificate authority: an ECDSA P-256 CA
// (crypto/x509 only) that issues the server's certificate and the
// workers' client certificates, whose identity is the URI SAN
// hodei://worker/<id>. It also parses and checks those certificates on
// both ends (a worker validates a renewed certificate before it switches
// to it) and builds the HTTP/2-over-TLS clients of agents, the CLI's
// peers and tests.
//
// The CA's key is never stored in the database: the operator keeps it in
// a file (--ca-key-file). Its certificate and the trust bundle live in
// PostgreSQL so that every replica serves the same bundle.
package pki
