/* SPDX-License-Identifier: MIT */
/*
 * reactor_service: the reactor's side of moed as a systemd service: the
 * watchdog pinged from the loop itself, so that a reactor stuck anywhere
 * (a blocking call, a livelock) stops the pings and systemd acts on it;
 * and STATUS= lines that say what the daemon is doing, for
 * `systemctl status moed`.
 */
#include <stdio.h>

#include "reactor/reactor_internal.h"

/* How often STATUS= is refreshed with the rates when nothing else changed. */
#define STATUS_INTERVAL_NS (10ull * 1000 * 1000 * 1000)

void reactor_service_start(struct reactor *r, uint64_t now_ns)
{
	service_watchdog_init(&r->watchdog, now_ns);
	r->status_ns = now_ns;
}

void reactor_service_tick(struct reactor *r, uint64_t now_ns)
{
	const struct sched_totals *t = sched_totals(r->sched);
	double seconds = (double)(now_ns - r->status_ns) / 1e9;
	const char *plural = r->n_clients == 1 ? "" : "s";

	if (r->stopping ||
	    (r->n_clients == r->status_clients && now_ns - r->status_ns < STATUS_INTERVAL_NS))
		return;
	/* rates over less than a second (a client came right after the last line) say little */
	if (seconds < 1.0)
		service_notify_status("serving, %u client%s", r->n_clients, plural);
	else
		service_notify_status("serving, %u client%s; %.0f batches/s, %.0f tokens/s",
				      r->n_clients, plural,
				      (double)(t->batches - r->status_batches) / seconds,
				      (double)(t->tokens - r->status_tokens) / seconds);
	r->status_clients = r->n_clients;
	r->status_ns = now_ns;
	r->status_batches = t->batches;
	r->status_tokens = t->tokens;
}

void reactor_service_stopping(uint32_t queued, uint32_t in_flight)
{
	char status[128];

	snprintf(status, sizeof(status), "draining %u queued batches and %u runs in flight",
		 queued, in_flight);
	service_notify_stopping(status);
}
