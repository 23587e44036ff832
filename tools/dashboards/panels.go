package main

import "github.com/grafana/grafana-foundation-sdk/go/dashboard"

func overview() *dashboard.DashboardBuilder {
	return board("hodei-overview", "Hodei / Overview", "Jobs in and out, the queue, success rate and durations by job type.").
		WithRow(dashboard.NewRowBuilder("Now")).
		WithPanel(single("Jobs created /s", "ops", "All types.", query("sum(rate(hodei_jobs_created_total[$__rate_interval]))", "created"))).
		WithPanel(single("Jobs completed /s", "ops", "Every outcome (leader).", query("sum(rate(hodei_jobs_completed_total[$__rate_interval]))", "completed"))).
		WithPanel(single("Success rate", "percentunit", "Succeeded among the jobs that reached a final state.",
			query(`sum(rate(hodei_jobs_completed_total{outcome="succeeded"}[$__rate_interval])) / sum(rate(hodei_jobs_completed_total[$__rate_interval]))`, "success"))).
		WithPanel(single("Jobs waiting", "short", "Queued and retrying jobs (leader).", query(`sum(max by (state) (hodei_jobs{state=~"queued|retrying"}))`, "waiting"))).
		WithRow(dashboard.NewRowBuilder("Jobs")).
		WithPanel(graph("Jobs created by type", "ops", "", query(rate("hodei_jobs_created_total", "type"), "{{type}}"))).
		WithPanel(graph("Jobs completed by outcome", "ops", "succeeded, failed, cancelled, timed_out (leader).",
			query(rate("hodei_jobs_completed_total", "outcome"), "{{outcome}}"))).
		WithPanel(graph("Jobs by state", "short", "Jobs in each non-final state (leader).", query("max by (state) (hodei_jobs)", "{{state}}"))).
		WithPanel(graph("Success rate by type", "percentunit", "",
			query(`sum by (type) (rate(hodei_jobs_completed_total{outcome="succeeded"}[$__rate_interval])) / sum by (type) (rate(hodei_jobs_completed_total[$__rate_interval]))`, "{{type}}"))).
		WithRow(dashboard.NewRowBuilder("Latency")).
		WithPanel(graph("Queue wait by type", "s", "From when an attempt could run to its assignment.",
			query(quantile(0.5, "hodei_job_queue_wait_seconds", "type, "), "p50 {{type}}"),
			query(quantile(0.99, "hodei_job_queue_wait_seconds", "type, "), "p99 {{type}}"))).
		WithPanel(graph("Job duration by type", "s", "Run time of the last attempt of jobs that ended.",
			query(quantile(0.5, "hodei_job_duration_seconds", "type, "), "p50 {{type}}"),
			query(quantile(0.95, "hodei_job_duration_seconds", "type, "), "p95 {{type}}"),
			query(quantile(0.99, "hodei_job_duration_seconds", "type, "), "p99 {{type}}"))).
		WithPanel(graph("Dispatch latency", "s", "Creation to first assignment.",
			query(quantile(0.99, "hodei_job_created_to_assigned_seconds", ""), "p99"),
			query(quantile(0.5, "hodei_job_created_to_assigned_seconds", ""), "p50"))).
		WithPanel(graph("Retries", "ops", "Retries scheduled, retried jobs that succeeded, retries exhausted (leader).",
			query(rate("hodei_job_retries_total", "outcome"), "{{outcome}}")))
}

func workers() *dashboard.DashboardBuilder {
	return board("hodei-workers", "Hodei / Workers and providers", "Worker counts, provider health, provisioning and the agents' own counters.").
		WithPanel(graph("Workers by state", "short", "Workers that are not terminated.", query("max by (provider, state) (hodei_workers)", "{{provider}} {{state}}"))).
		WithPanel(graph("Provider unhealthy for", "s", "0 when healthy; alert at 120 s.", query("max by (provider) (hodei_provider_unhealthy_seconds)", "{{provider}}"))).
		WithPanel(graph("Health checks", "ops", "", query(rate("hodei_provider_health_checks_total", "provider, result"), "{{provider}} {{result}}"))).
		WithPanel(graph("Provisioning time", "s", "The provider's provision call.",
			query(quantile(0.5, "hodei_provision_seconds", "provider, "), "p50 {{provider}}"),
			query(quantile(0.95, "hodei_provision_seconds", "provider, "), "p95 {{provider}}"))).
		WithPanel(graph("Workers provisioned and terminated", "ops", "",
			query(rate("hodei_workers_provisioned_total", "provider, result"), "provisioned {{provider}} {{result}}"),
			query(rate("hodei_workers_terminated_total", "provider"), "terminated {{provider}}"))).
		WithPanel(graph("Agent reconnects", "ops", "Streams agents re-established, by provider.",
			query(rate("hodei_agent_reconnects_total", "provider"), "{{provider}}"))).
		WithPanel(graph("Agent reconnect time", "s", "Mean time from a lost stream to the next welcome.",
			query("sum by (provider) (rate(hodei_agent_reconnect_seconds_sum[$__rate_interval])) / sum by (provider) (rate(hodei_agent_reconnect_seconds_count[$__rate_interval]))", "{{provider}}"))).
		WithPanel(graph("Agent log lines", "ops", "Lines read from jobs and lines dropped, by provider.",
			query(rate("hodei_agent_log_lines_total", "provider"), "read {{provider}}"),
			query(rate("hodei_agent_log_lines_dropped_total", "provider"), "dropped {{provider}}")))
}

func events() *dashboard.DashboardBuilder {
	return board("hodei-events", "Hodei / Event bus", "Subscriber lag, handler and processing latency, failures and dead letters.").
		WithPanel(graph("Subscriber lag", "short", "Events a durable subscriber has not handled yet.", query("max by (subscriber) (hodei_event_subscriber_lag)", "{{subscriber}}"))).
		WithPanel(graph("Events published", "ops", "Every replica counts every event: max across replicas.",
			query("sum by (type) (max without (instance) (rate(hodei_events_published_total[$__rate_interval])))", "{{type}}"))).
		WithPanel(graph("Processing latency p99", "s", "From the event's commit to the end of its handling, by consumer.",
			query(quantile(0.99, "hodei_event_processing_seconds", "consumer, "), "{{consumer}}"))).
		WithPanel(graph("Handler latency p99", "s", "Durable subscribers' handlers.", query(quantile(0.99, "hodei_event_handler_seconds", "subscriber, "), "{{subscriber}}"))).
		WithPanel(graph("Handler failures", "ops", "", query(rate("hodei_event_handler_failures_total", "subscriber"), "{{subscriber}}"))).
		WithPanel(graph("Dead letters", "short", "Events parked in the last 15 minutes.",
			query("sum by (subscriber) (increase(hodei_events_dead_lettered_total[15m]))", "{{subscriber}}"))).
		WithPanel(graph("Listener reconnects and held-back reads", "ops", "",
			query("sum(rate(hodei_event_listener_reconnects_total[$__rate_interval]))", "listener reconnects"),
			query(rate("hodei_event_reads_held_back_total", "subscriber"), "held back {{subscriber}}")))
}

func api() *dashboard.DashboardBuilder {
	return board("hodei-api", "Hodei / API", "RPC rate, errors and latency by procedure; streams count their messages.").
		WithPanel(graph("Requests", "reqps", "", query(rate("hodei_rpc_requests_total", "procedure"), "{{procedure}}"))).
		WithPanel(graph("Errors", "reqps", "Calls that ended with a code other than ok.",
			query(`sum by (procedure, code) (rate(hodei_rpc_requests_total{code!="ok"}[$__rate_interval]))`, "{{procedure}} {{code}}"))).
		WithPanel(graph("Latency p99", "s", "Unary calls.", query(quantile(0.99, "hodei_rpc_duration_seconds", "procedure, "), "{{procedure}}"))).
		WithPanel(graph("Latency p50", "s", "Unary calls.", query(quantile(0.5, "hodei_rpc_duration_seconds", "procedure, "), "{{procedure}}"))).
		WithPanel(graph("Stale reports", "ops", "Agent reports rejected for a stale fencing token.",
			query("sum(rate(hodei_stale_reports_total[$__rate_interval]))", "stale")))
}

func security() *dashboard.DashboardBuilder {
	return board("hodei-security", "Hodei / Security", "Certificate expiry and rotations, secret accesses and log redactions.").
		WithPanel(graph("Certificate expires in", "s", "Time left before each certificate expires, by kind (server, ca, worker) and subject.",
			query("min by (kind, subject) (hodei_certificate_expiry_timestamp_seconds) - time()", "{{kind}} {{subject}}"))).
		WithPanel(graph("Certificate rotations", "short", "Rotations in the last hour.",
			query("sum by (kind, result) (increase(hodei_certificate_rotations_total[1h]))", "{{kind}} {{result}}"))).
		WithPanel(graph("Secret accesses", "ops", "", query(rate("hodei_secret_accesses_total", "operation"), "{{operation}}"))).
		WithPanel(graph("Log redactions", "ops", "Secret values masked in job output.",
			query("sum(rate(hodei_log_redactions_total[$__rate_interval]))", "redactions")))
}
