/* SPDX-License-Identifier: MIT */
/* ratelimit: a fixed window of at most N events; see ratelimit.h. */
#include "util/ratelimit.h"

bool ratelimit_below(struct ratelimit *rl, uint64_t now_ns, unsigned *ret_suppressed)
{
	unsigned suppressed = 0;

	if (!rl->window_start_ns || now_ns - rl->window_start_ns >= rl->interval_ns) {
		suppressed = rl->suppressed;
		/* never 0: 0 means "no window yet", and a clock may start near it */
		rl->window_start_ns = now_ns ? now_ns : 1;
		rl->in_window = 0;
		rl->suppressed = 0;
	}
	if (ret_suppressed)
		*ret_suppressed = suppressed;
	if (rl->in_window < rl->burst) {
		rl->in_window++;
		return true;
	}
	rl->suppressed++;
	return false;
}

unsigned ratelimit_take_suppressed(struct ratelimit *rl, uint64_t now_ns)
{
	unsigned n = rl->suppressed;

	if (!n || now_ns - rl->window_start_ns < rl->interval_ns)
		return 0;
	rl->suppressed = 0;
	return n;
}
