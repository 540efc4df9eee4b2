/* SPDX-License-Identifier: MIT */
/*
 * metrics_http: the Prometheus endpoint, `GET /metrics` on the address of
 * the metrics_listen setting (off by default; a loopback address such as
 * 127.0.0.1:9464 is the usual choice, since the figures are moed's and
 * anyone who reaches the port reads them).
 *
 * A thread of its own serves it, one connection at a time, and asks moed
 * for its status the way moectl does: over the control socket, so the
 * reactor answers as for any STATUS and no other thread reads its state.
 * A scraper that connects and says nothing is closed after
 * REQUEST_TIMEOUT_MS; a request is at most 8 KiB. Responses: 200 with
 * metrics_text.h's text, 404 for another path, 405 for another method, 400
 * for what is not HTTP, 503 while the status cannot be had (moed drains).
 */
#pragma once

#include "util/diag.h"

struct metrics_http;

/*
 * Listen on @addr_port ("ADDR:PORT", numeric) and serve the status of the moed
 * at @control_socket (both copied). 0, or -errno with the reason in @d
 * (a bad address, the port in use).
 */
int metrics_http_start(const char *addr_port, const char *control_socket,
		       struct metrics_http **ret, struct diag *d);

/* Stop serving and join the thread. NULL-safe; returns NULL. */
struct metrics_http *metrics_http_stop(struct metrics_http *m);
