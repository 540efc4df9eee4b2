/* SPDX-License-Identifier: MIT */
/*
 * load_status: the control socket while moed opens its expert store, which
 * can take minutes for a large model. A thread accepts on the listening
 * socket and answers each connection's first message:
 *
 *   STATUS        -> the phase (attaching, loading) with bytes read, the
 *                    total and the percent, as JSON:
 *                    {"daemon": {"pid", "phase": "loading", "uptime_s"},
 *                     "load": {"phase", "bytes", "total", "percent"}}
 *   HELLO         -> refused with -EAGAIN (libmoe: "try again later")
 *   EXPERT_CHANGE -> refused with -EAGAIN
 *
 * then closes it. Connections are served one at a time, each given a
 * second to send its message: a silent client delays the next by that
 * much, never the load. Stopping it leaves the listening socket to the
 * reactor; connections still in the backlog are the reactor's to answer.
 */
#pragma once

#include "store/expert_store.h"

struct load_status;

/* Start answering on @listen_fd with @progress (both outlive it). 0 or -errno. */
int load_status_start(int listen_fd, const struct store_progress *progress,
		      struct load_status **ret);

/* Stop and join the thread; NULL-safe; returns NULL. */
struct load_status *load_status_stop(struct load_status *ls);
