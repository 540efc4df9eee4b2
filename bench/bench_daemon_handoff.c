/* SPDX-License-Identifier: MIT */
/*
 * bench_daemon_handoff: the reactor-to-executor hand-off on moed's own
 * executor, timed in this process; see bench_daemon_handoff.h.
 */
#include "bench_daemon_handoff.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exec/executor.h"

#define PAUSE_ASLEEP_NS 1000000L /* far beyond the runner's spin (50 us) */

/* A run that computes nothing: only the hand-off is left to time. */
static void item_run_nothing(struct exec_item *item)
{
	(void)item;
}

/*
 * One hand-off, as the sleeping reactor makes it: submit the item, arm the
 * read of the executor's eventfd and wait in io_uring_enter for it (one
 * system call for both, as in the reactor's loop), then take the finished
 * item. The elapsed nanoseconds, or -errno.
 */
static int64_t handoff_once(struct executor *ex, struct io_uring *ring, struct exec_item *item)
{
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	uint64_t buf, t0;
	int r;

	t0 = bench_now_ns();
	executor_submit(ex, item);
	sqe = io_uring_get_sqe(ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_read(sqe, executor_event_fd(ex), &buf, sizeof(buf), 0);
	r = io_uring_submit_and_wait(ring, 1);
	if (r < 0)
		return r;
	r = io_uring_peek_cqe(ring, &cqe);
	if (r < 0)
		return r;
	r = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	if (r < 0)
		return r;
	/* each read empties the counter and the runner lists an item before its write */
	if (executor_take_done(ex) != item)
		return -EIO;
	return (int64_t)(bench_now_ns() - t0);
}

/* @warmup untimed then @n timed hand-offs, each after a pause of @pause_ns (0: none). */
static int handoff_block(struct executor *ex, struct io_uring *ring, long pause_ns,
			 uint32_t warmup, uint32_t n, double *samples_ns)
{
	struct exec_item item = { .run = item_run_nothing };
	const struct timespec pause = { .tv_nsec = pause_ns };

	for (uint32_t i = 0; i < warmup + n; i++) {
		int64_t t;

		if (pause_ns)
			nanosleep(&pause, NULL);
		t = handoff_once(ex, ring, &item);
		if (t < 0)
			return (int)t;
		if (i >= warmup)
			samples_ns[i - warmup] = (double)t;
	}
	return 0;
}

int handoff_bench_run(uint32_t warmup, uint32_t n, uint32_t n_asleep,
		      struct handoff_result *ret)
{
	struct handoff_result res;
	struct executor *ex = NULL;
	struct io_uring ring;
	double *samples;
	int r;

	samples = calloc(n > n_asleep ? n : n_asleep, sizeof(double));
	if (!samples)
		return -ENOMEM;
	r = io_uring_queue_init(4, &ring, 0);
	if (r < 0) {
		fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-r));
		goto out_samples;
	}
	r = executor_new(1, &ex);
	if (r < 0) {
		fprintf(stderr, "executor_new: %s\n", strerror(-r));
		goto out_ring;
	}
	r = handoff_block(ex, &ring, 0, warmup, n, samples);
	if (r < 0)
		goto out_executor;
	samples_summarize(samples, n, &res.spinning);
	r = handoff_block(ex, &ring, PAUSE_ASLEEP_NS, warmup / 10, n_asleep, samples);
	if (r < 0)
		goto out_executor;
	samples_summarize(samples, n_asleep, &res.asleep);
	*ret = res;
out_executor:
	if (r < 0)
		fprintf(stderr, "hand-off: %s\n", strerror(-r));
	executor_free(ex);
out_ring:
	io_uring_queue_exit(&ring);
out_samples:
	free(samples);
	return r;
}
