/* SPDX-License-Identifier: MIT */
/*
 * bench_daemon_handoff: what moed's reactor pays to hand a run to its
 * executor and learn of its end, measured on moed's own executor
 * (daemon/exec/executor.c) in this process, without a daemon, a client or
 * a ring: the calling thread plays the reactor, hands over an item whose
 * run does nothing, and waits for the executor's eventfd through an
 * io_uring read, as the reactor does when it sleeps (poll_us = 0, section 1
 * of bench_daemon). What this leaves out: the engine (the item computes
 * nothing) and the reactor's own work around the hand-off (run setup, the
 * copies, the CQE).
 */
#pragma once

#include <stdint.h>

#include "bench_daemon_proc.h"

struct handoff_result {
	/*
	 * executor_submit() to executor_take_done() returning the item. spinning:
	 * the next item is handed over as soon as the last one is taken, while
	 * the runner still spins for work (as between the batches of a client
	 * that submits at once); asleep: after a pause longer than the runner's
	 * spin, so it sleeps on its condition variable and must be woken.
	 */
	struct sample_stats spinning, asleep;
};

/*
 * One executor with one runner; @warmup untimed then @n timed hand-offs in
 * each mode (@n_asleep of them asleep: each costs a 1 ms pause). 0 or
 * -errno (after printing the reason to stderr); *@ret filled on success.
 */
int handoff_bench_run(uint32_t warmup, uint32_t n, uint32_t n_asleep,
		      struct handoff_result *ret);
