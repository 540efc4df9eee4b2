/* SPDX-License-Identifier: MIT */
/*
 * executor: the threads that carry the reactor's runs, so that the reactor
 * thread computes nothing but runs too small to hand over (inline_run_bytes,
 * sched.c).
 *
 * The reactor hands a run over with executor_submit(), which never blocks
 * for longer than a short lock; one of the executor's runner threads takes
 * it and calls item->run() (an engine forward, whose parallel parts go to
 * the engine's pool). A finished item joins the done list and the
 * executor's eventfd is written unless the reactor said it polls: the
 * reactor watches that fd in its io_uring while it sleeps, and takes the
 * finished items with executor_take_done() on the reactor thread, where it
 * writes the CQEs.
 *
 *   reactor                      runner thread(s)
 *   executor_submit(item) ---->  item->run(item)
 *                                done list += item;
 *                                write(eventfd) unless the reactor polls
 *   polling: take_done each pass,
 *   asleep: eventfd readable (io_uring)
 *   executor_take_done() <----
 *
 * Several items may be in flight at once (one per runner); each carries its
 * own buffers and scratch. Items are intrusive: the executor owns none of
 * them, it only links them.
 *
 * Thread-safety: submit and take_done are for one thread (the reactor);
 * the runners are internal.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct exec_item {
	struct exec_item *next; /* the executor's link; the caller leaves it alone */
	void (*run)(struct exec_item *item); /* called on a runner thread */
};

struct executor;

/*
 * Start @n_runners runner threads (1..64) and the eventfd. Signals stay
 * blocked in the runners as in the caller (moed blocks its stop signals
 * before). 0 or -errno.
 */
int executor_new(uint32_t n_runners, struct executor **ret_executor);

/*
 * Stop the runners after the items they are running; items still queued
 * are not run and not returned (the caller drains first). NULL-safe;
 * returns NULL.
 */
struct executor *executor_free(struct executor *ex);

/* The eventfd written after each finished item (non-blocking, close-on-exec). */
int executor_event_fd(const struct executor *ex);

/* Queue @item for a runner. Never fails: the item is the caller's memory. */
void executor_submit(struct executor *ex, struct exec_item *item);

/*
 * The finished items in the order they finished (a list through ->next),
 * or NULL. Cheap when nothing finished (one atomic load, no lock), so a
 * polling reactor may call it on every pass.
 */
struct exec_item *executor_take_done(struct executor *ex);

/*
 * Drain the eventfd's counter (non-blocking), for a caller that polls the
 * fd instead of reading it. Order matters: drain (or read) the eventfd
 * first, then executor_take_done(). The other way round, an item finished
 * between the two would have its write drained and its wake-up lost.
 */
void executor_ack_event(struct executor *ex);

/*
 * The watcher (the thread that takes done items) polls executor_take_done()
 * from now on: runners skip the eventfd write until executor_watcher_sleep().
 * Without this call every finished item writes the eventfd.
 */
void executor_watcher_polling(struct executor *ex);

/*
 * The watcher is about to sleep on the eventfd: runners write it again.
 * True when it may sleep; false when an item finished meanwhile (its write
 * may have been skipped: take it, and call executor_watcher_polling() if it
 * goes on polling). A Dekker handshake with the runners' count of finished
 * items: both sides' stores and loads are sequentially consistent.
 */
bool executor_watcher_sleep(struct executor *ex);
