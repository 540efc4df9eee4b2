/* SPDX-License-Identifier: MIT */
/*
 * reactor: moed's one I/O thread. It computes only runs too small to hand
 * to a runner (inline_run_bytes, sched.h). A single io_uring
 * carries every wait: the control socket's accepts, each new connection's
 * first message, each client's doorbell (an IORING_OP_FUTEX_WAIT on its SQ
 * futex word, or a poll on its eventfd), each client's pidfd and socket
 * hang-up, a timerfd tick, a signalfd, and the executor's eventfd that says
 * a run finished. Event sources are entries of a watcher table
 * (reactor_internal.h). Runs compute on the executor's threads (sched.h).
 *
 * The loop, in one picture:
 *
 *   for (;;) {
 *       consume every client's SQ (validate, queue)      <- no syscalls
 *       complete the runs the executor finished          <- CQEs written
 *       hand ready batches to the executor               <- fair, merged
 *       publish CQEs, wake clients that sleep             <- futex_wake only if asked
 *       submit armed ops; handle ready completions        <- no syscall (peek)
 *       if there was work within poll_us: loop again      <- adaptive polling
 *       set NEED_WAKEUP on every SQ, re-check, arm doorbells, sleep in io_uring
 *   }
 *
 * While a run computes, the reactor goes on accepting, answering HELLO and
 * STATUS, seeing hang-ups and queuing other clients' SQEs.
 *
 * SIGTERM and SIGINT stop accepting, run the batches already consumed,
 * wait for the runs in flight, publish their completions and return 0;
 * what clients submit meanwhile completes at once with -ESHUTDOWN.
 */
#pragma once

#include <stdint.h>

#include "config/config.h"
#include "engine/engine.h"
#include "model/model.h"
#include "store/expert_store.h"
#include "util/diag.h"

struct reactor;

/* What the reactor's runs counted per layer ([n_layers] of its model); valid until freed. */
const struct layer_stats *reactor_layer_stats(const struct reactor *r);

/*
 * Set up the reactor over the listening socket @listen_fd (taken over on
 * success), serving @model on @engine (both borrowed for the reactor's
 * lifetime). @model_name is published to clients. SIGTERM/SIGINT/SIGHUP
 * must already be blocked in every thread (moed blocks them before the
 * engine starts).
 */
int reactor_new(const struct moed_config *cfg, int listen_fd, struct expert_store *store,
		const char *model_name, struct engine *engine, struct reactor **ret_reactor,
		struct diag *d);

/*
 * Where a reload (SIGHUP) gets the new configuration: all its sources read
 * again (file, drop-ins, command line) into *@ret and validated; 0 or
 * -errno with the reason in @d. Called on the reactor thread.
 */
typedef int (*reactor_reload_fn)(void *arg, struct moed_config *ret, struct diag *d);

/*
 * Make SIGHUP reload: @fn parses, the reactor applies what may change live
 * to @cfg (the object given to reactor_new(), here writable: only fields
 * that the reactor thread alone reads are written) and logs what needs a
 * restart. Without it SIGHUP is logged and ignored.
 */
void reactor_set_reload(struct reactor *r, struct moed_config *cfg, reactor_reload_fn fn,
			void *arg);

/* Run until a stop signal; 0 after a clean drain, or -errno. */
int reactor_run(struct reactor *r);

struct reactor *reactor_free(struct reactor *r);
