// Package cli implements the user commands of the hodei binary: run, job,
// events and provider. It talks to the server only through the generated
// Connect clients (gRPC over h2c) and never imports other internal
// packages; environment variables reach it only through IO.Env.
//
// # Entry point
//
// Main parses one subcommand with its own flag.FlagSet and returns the
// process exit code (see the Exit* constants). Every error is printed to
// IO.Err as "hodei: <message>"; errors from the server print their Connect
// code first ("hodei: invalid_argument: command: is required").
//
// # Streams and reconnects
//
// Following streams (run, job logs -f, job watch, events tail) re-open the
// stream after a transient failure (unavailable, unknown, internal, ...)
// with a growing delay, and give up after a quiet period without any
// progress. Every connection must be accepted and answered within
// --connect-timeout; a stream whose server never answered ends at once
// instead of reconnecting, and an answered stream is not bounded. Logs
// resume by skipping the chunks already printed: the API has no "after"
// field, so the CLI remembers the (attempt, seq, index within seq) of the
// last chunk it printed and drops chunks up to it from the replayed
// history. Events resume with after_id. Watches print state
// changes only, so a replayed current state is not printed twice.
//
// # Concurrency
//
// Main runs on the caller's goroutine; its only helper (the grace timer of
// an interrupted SubmitJob) is told to stop before Main returns. Cancelling
// ctx interrupts the command (exit 130); run first cancels its job, with a
// fresh bounded context.
package cli
