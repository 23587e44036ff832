// Package eventbus is Hodei's durable event bus on PostgreSQL: an outbox
// written in the caller's transaction, LISTEN/NOTIFY as a wake-up hint,
// and named subscribers whose cursors live in the database.
//
// # Publishing
//
// Publish inserts events with the caller's transaction and issues a NOTIFY
// on the channel "hodei_events" with an empty payload. The events of one
// Publish (up to 65,536) are one row of event_batches, each event an
// element of its arrays with its own id (first_id, first_id + 1, ...); the
// view "events" lists one row per event. A row per publish, not per
// event, keeps a claim or a result batch of many jobs at one heap row and
// one entry per index. PostgreSQL delivers the NOTIFY only on commit, so a
// rolled-back transaction publishes nothing; identical NOTIFYs of one
// transaction are folded into one.
//
// # Order
//
// Every event records the id of its transaction (pg_current_xact_id()).
// Subscribers read in (xid, id) order and only pass an event once its xid
// is below the xmin of the reading snapshot, i.e. once every transaction
// that could still add an event before it has finished. A cursor therefore
// never moves past an event that is not committed yet (gap safety), and
// all subscribers see the same total order. Events of one transaction are
// in publish order; events of one aggregate are in publish order whenever
// the publishing transaction's first write is the aggregate's own row,
// which is how every Hodei state change is written (the row write assigns
// the xid, and the row lock orders the transactions).
//
// A transaction that stays open holds back delivery of every event
// published after it started (not of its own events only); keep
// transactions that publish short. While events are held back the
// subscriber re-reads after a short, growing delay (1 ms to 50 ms), so a
// transaction that writes without publishing cannot stall delivery.
//
// # Delivery
//
// At least once, in order, per subscriber. A subscriber handles a batch,
// then stores its cursor; after a crash the batch since the last stored
// cursor is delivered again, so handlers must be idempotent. A handler
// that returns an error is retried with exponential backoff and jitter;
// after MaxAttempts failures the event is parked in event_dead_letters
// (ListDeadLetters, Replay) and the subscriber moves on. Replay calls the
// handler again with the same policy; if it still fails the event is
// parked again (ErrStillFailing). Handlers run one at a time per
// subscriber, Replay included: a slow handler slows only its subscriber
// (backpressure is the subscriber's lag, exported as a metric), never the
// publishers.
//
// Subscribe registers subscribers that live as long as Run; RunSubscriber
// runs one that comes and goes while the bus runs (one per webhook), in
// the caller's goroutine, and removes its metric series when it stops.
// ReplayWith replays a dead letter of a subscriber that may run in another
// process, with the caller's handler and number of attempts.
//
// The lag gauge is set to 0 whenever a subscriber has handled everything
// it may read; while it works through a backlog it counts the events after
// its cursor at most once a second.
//
// # Retention
//
// Prune (and RunRetention, periodically) deletes events older than a
// given age that every cursor in the database has passed and that no
// pending dead letter refers to.
//
// # Wake-ups
//
// One connection per Bus LISTENs. A notification wakes every subscriber
// and live tail of the process. If the connection drops it reconnects
// with backoff and wakes everyone, who catch up from their cursors. A
// subscriber whose queries fail (the database restarts, or is not there
// yet when Run starts) retries with the same backoff. A slow safety poll
// (Config.SafetyPoll) covers anything missed; correctness never depends
// on it.
//
// Live tails (Tail, TailFrom) share one reader per process (the feed,
// started by Run): it reads after each wake-up, with the same gap guard,
// and keeps the last 8,192 events in memory; a tail whose cursor is older
// than that reads the database until it catches up. A lazy tail
// (Filter.Lazy) gets its events with the payload still encoded and decodes
// only those it reads (Event.Decode): tails that only wake something up
// should be lazy. A tail is for people, dashboards and wake-ups, never for
// work that must not be missed: use a durable subscriber for that.
//
// OnNotify registers other NOTIFY channels on the same connection (wake-up
// hints that are not events, such as new log output).
//
// # Handlers must
//
// be idempotent, return promptly (use ctx), and not publish from outside
// a transaction that also records the state they derive.
package eventbus
