// Package webhook sends events to HTTP endpoints: each webhook is a
// durable subscriber of the event bus (named store.WebhookSubscriber) whose
// handler POSTs the event as proto JSON, signed with the webhook's secret.
//
// The Manager runs on the housekeeping leader: one subscriber per webhook,
// started and stopped as webhooks are created and removed (it reacts to
// WebhookCreated and WebhookDeleted), each in its own goroutine, so that a
// slow or dead endpoint delays only its own webhook. A subscriber starts
// at its webhook's creation and keeps its cursor in PostgreSQL, so a
// restart or a new leader resumes where delivery stopped.
//
// Delivery is at least once: the cursor is stored after each batch, so
// after a crash the events since the last stored cursor are sent again
// (receivers deduplicate on X-Hodei-Delivery, the event id). A non-2xx
// answer, no answer within Config.Timeout, or no connection is a failed
// attempt, retried with the bus's exponential backoff; after the webhook's
// max_attempts the event becomes a failed delivery (a dead letter of the
// subscriber) and the webhook goes on with the next event. Replay sends
// failed deliveries again.
//
// The label filter: JobCreated carries the job's labels; for a job's other
// events the webhook looks them up (Store.JobHasLabels, one primary-key
// read). A job's labels never change, so the answer is the one its events
// were published with. The lookup costs only events that a webhook with
// labels would otherwise send, next to a POST each; carrying the labels in
// every job event would cost every job, webhooks or not.
package webhook
