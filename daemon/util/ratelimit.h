/* SPDX-License-Identifier: MIT */
/*
 * ratelimit: "at most @burst events per @interval_ns" for log lines that a
 * peer can provoke at will (refused connections, refused HELLOs), so that a
 * hostile client cannot flood the journal. A window opens at the first
 * event after the previous one closed; the events beyond the burst are
 * counted, and the caller reports that count once, when the next window
 * opens (systemd's log_ratelimit and SPDK's SPDK_ERRLOG_RATELIMIT do the
 * same). Not thread-safe: one owner (the reactor thread).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct ratelimit {
	uint64_t interval_ns;
	unsigned burst;
	uint64_t window_start_ns; /* 0: no window open yet */
	unsigned in_window;       /* events in the current window */
	unsigned suppressed;      /* events refused in the current window */
};

#define RATELIMIT_INIT(_interval_ns, _burst)                                                       \
	{                                                                                          \
		.interval_ns = (_interval_ns), .burst = (_burst)                                   \
	}

/*
 * Count one event at @now_ns; true when it may be logged. When it opens a
 * new window, *@ret_suppressed (if not NULL) is set to the number of events
 * the previous window refused (report it once), else to 0.
 */
bool ratelimit_below(struct ratelimit *rl, uint64_t now_ns, unsigned *ret_suppressed);

/*
 * If the current window has closed with events refused, return their
 * number and forget it (so a quiet period after a flood still gets its
 * "N suppressed" line, from a timer); else 0.
 */
unsigned ratelimit_take_suppressed(struct ratelimit *rl, uint64_t now_ns);
