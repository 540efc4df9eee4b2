/* SPDX-License-Identifier: MIT */
/*
 * stress_executor: the executor (daemon/exec) as the reactor drives it. The
 * test's thread plays the reactor: it submits items, keeps a window of them
 * in flight (so items are submitted while others run), and takes the
 * finished ones back in three ways chosen at random per pass: waiting on the
 * eventfd with poll() then acking it and taking the list, as the io_uring
 * read does; polling executor_take_done() alone, as a busy reactor does; and
 * idling past the runners' spin first, so that they sleep and the next
 * submit has to wake them. Items are a small set of slots reused, as the
 * reactor reuses its runs. Each item stamps ownership (STYLE 16b):
 *
 *   - every submission comes back exactly once (a per-sequence counter), in
 *     a well-formed list, and only after its run() finished (runs == 1);
 *   - run() writes a plain (non-atomic) result that the reactor reads after
 *     executor_take_done(): the test's own atomics are relaxed, so only the
 *     executor's ordering makes it visible (ThreadSanitizer otherwise reports
 *     the race, and a stale value fails the check);
 *   - no more than n_runners items run at once;
 *   - nothing touches an item after it came back: the reactor poisons the
 *     slot at once (memset) and reuses it for a later submission;
 *   - a poll() that times out with items in flight is a lost wake-up: the
 *     reactor polls (executor_watcher_polling(), the runners skip the
 *     eventfd write) and says executor_watcher_sleep() before it sleeps,
 *     as moed's does.
 *
 * Then executor_free() with items in flight (it waits for the running ones;
 * queued ones are not run) and while idle or spinning: nothing leaks (fds
 * checked per test; memory by LeakSanitizer), nothing hangs.
 *
 * Failures on runner threads are recorded and asserted by the test's thread.
 *
 * Usage: stress_executor [ITEMS]: submissions per runner count in the main
 * case (default DEFAULT_ITEMS, or $MOE_STRESS_ITERS; ctest passes fewer
 * under the sanitizers).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_assert.h"
#include "test_threads.h"
#include "test_fds.h"

#include "exec/executor.h"
#include "util/spin.h"

#define DEFAULT_ITEMS   50000
#define MAX_WINDOW      16
#define ITEM_LIVE       0x17e3a11cu
#define POISON_BYTE     0x5a
#define LOST_WAKEUP_MS  10000
#define GATE_TIMEOUT_NS (60ull * 1000000000ull)

static unsigned long arg_items = DEFAULT_ITEMS;

/* ------------------------------------------------------------ setup */

static int setup(void **state)
{
	reset_errors();
	return fd_check_setup(state);
}

/* ------------------------------------------------------------ items */

/* What runs concurrently, across all items of one executor. */
struct run_stats {
	uint32_t n_runners;
	atomic_uint running;
	atomic_uint max_running;
	atomic_uint started;
	atomic_bool gate; /* gated items wait for it */
};

struct titem {
	struct exec_item item; /* the executor's part */
	uint32_t magic;        /* ITEM_LIVE from submit until the reactor takes it */
	uint64_t seq;          /* which submission */
	uint64_t in, out;      /* plain: out = f(in), written by run() */
	bool gated;            /* run() waits for stats->gate */
	bool finished;         /* plain: run() got to its end */
	atomic_uint runs;      /* times run() began on this submission */
	struct run_stats *stats;
};

static struct titem *titem_of(struct exec_item *it)
{
	return (struct titem *)((char *)it - offsetof(struct titem, item));
}

static uint64_t item_result(uint64_t in)
{
	return mix64(in ^ 0xfeedfacecafebeefull);
}

static void wait_gate(struct run_stats *st)
{
	uint64_t deadline = spin_now_ns() + GATE_TIMEOUT_NS;

	while (!atomic_load_explicit(&st->gate, memory_order_relaxed)) {
		if (spin_now_ns() > deadline) {
			record_error("gated item waited over 60 s");
			return;
		}
		usleep(100);
	}
}

static void titem_run(struct exec_item *it)
{
	struct titem *ti = titem_of(it);
	struct run_stats *st;
	unsigned running, max;

	/* Only relaxed atomics here: the executor alone must order the plain data. */
	if (ti->magic != ITEM_LIVE) {
		record_error("run() on an item not submitted (magic %#x)", ti->magic);
		return;
	}
	st = ti->stats;
	if (atomic_fetch_add_explicit(&ti->runs, 1, memory_order_relaxed))
		record_error("item %" PRIu64 " run twice", ti->seq);
	atomic_fetch_add_explicit(&st->started, 1, memory_order_relaxed);
	running = atomic_fetch_add_explicit(&st->running, 1, memory_order_relaxed) + 1;
	if (running > st->n_runners)
		record_error("%u items running on %u runners", running, st->n_runners);
	max = atomic_load_explicit(&st->max_running, memory_order_relaxed);
	while (running > max &&
	       !atomic_compare_exchange_weak_explicit(&st->max_running, &max, running,
	                                              memory_order_relaxed, memory_order_relaxed))
		;
	if (ti->gated) {
		wait_gate(st);
	} else {
		unsigned spins = (unsigned)(ti->in & 1023);

		if ((ti->in >> 12) % 29 == 0)
			sched_yield();
		for (volatile unsigned i = 0; i < spins; i++)
			;
	}
	ti->out = item_result(ti->in);
	ti->finished = true;
	atomic_fetch_sub_explicit(&st->running, 1, memory_order_relaxed);
}

static void titem_init(struct titem *ti, struct run_stats *st, uint64_t seq, bool gated)
{
	memset(ti, 0, sizeof(*ti));
	ti->item.run = titem_run;
	ti->magic = ITEM_LIVE;
	ti->seq = seq;
	ti->in = mix64(seq + 1);
	ti->gated = gated;
	ti->stats = st;
	atomic_init(&ti->runs, 0);
}

static void run_stats_init(struct run_stats *st, uint32_t n_runners)
{
	st->n_runners = n_runners;
	atomic_init(&st->running, 0);
	atomic_init(&st->max_running, 0);
	atomic_init(&st->started, 0);
	atomic_init(&st->gate, false);
}

/* ------------------------------------------------------------ the reactor's side */

struct reactor {
	struct executor *ex;
	struct run_stats stats;
	struct titem slots[MAX_WINDOW];
	bool slot_busy[MAX_WINDOW];
	uint8_t *returned; /* per sequence number: times it came back */
	uint64_t n_total, n_submitted, n_returned;
	uint32_t in_flight, window;
	unsigned long n_polls, n_spins, n_idles, n_empty_polls;
};

static void reactor_submit_one(struct reactor *r)
{
	uint32_t s = 0;

	while (r->slot_busy[s])
		s++;
	r->slot_busy[s] = true;
	titem_init(&r->slots[s], &r->stats, r->n_submitted++, false);
	r->in_flight++;
	executor_submit(r->ex, &r->slots[s].item);
}

/* Check every item of a finished list, then poison and free its slot. */
static void reactor_complete(struct reactor *r, struct exec_item *list)
{
	uint32_t n = 0, limit = r->in_flight;

	for (struct exec_item *it = list, *next; it; it = next) {
		struct titem *ti = titem_of(it);
		ptrdiff_t s = ti - r->slots;

		if (++n > limit) {
			record_error("done list longer than the %u items in flight", limit);
			return;
		}
		if (s < 0 || s >= MAX_WINDOW || !r->slot_busy[s]) {
			record_error("an item that was not in flight came back (slot %td)", s);
			return;
		}
		next = it->next;
		if (ti->magic != ITEM_LIVE || ti->seq >= r->n_submitted) {
			record_error("slot %td came back corrupt (magic %#x, seq %" PRIu64 ")", s,
			             ti->magic, ti->seq);
			return;
		}
		if (r->returned[ti->seq]++)
			record_error("item %" PRIu64 " came back twice", ti->seq);
		if (atomic_load_explicit(&ti->runs, memory_order_relaxed) != 1 || !ti->finished)
			record_error("item %" PRIu64 " came back with runs %u, finished %d",
			             ti->seq, atomic_load(&ti->runs), ti->finished);
		if (ti->out != item_result(ti->in))
			record_error("item %" PRIu64 ": result not visible after take_done",
			             ti->seq);
		/* a runner still touching the item races with this (TSan) */
		memset(ti, POISON_BYTE, sizeof(*ti));
		r->slot_busy[s] = false;
		r->in_flight--;
		r->n_returned++;
	}
}

/* One pass of the reactor's loop after submitting: take what finished. */
static int reactor_wait(struct reactor *r, uint64_t rng)
{
	struct pollfd pfd = {.fd = executor_event_fd(r->ex), .events = POLLIN};
	int n;

	switch (rng % 4) {
	case 0:
	case 1: /* sleep on the eventfd, as in io_uring; ack before taking */
		r->n_polls++;
		/* the handshake: runs that finished while we polled wrote nothing */
		if (!executor_watcher_sleep(r->ex)) {
			executor_watcher_polling(r->ex);
			break;
		}
		n = poll(&pfd, 1, LOST_WAKEUP_MS);
		executor_watcher_polling(r->ex);
		if (n < 0)
			return -errno;
		if (n == 0) {
			record_error("lost wake-up: no event in %d ms with %u items in flight",
			             LOST_WAKEUP_MS, r->in_flight);
			return -ETIMEDOUT;
		}
		executor_ack_event(r->ex);
		break;
	case 2: /* a busy reactor: take_done on every pass, no fd */
		r->n_spins++;
		sched_yield();
		break;
	case 3: /* idle past the runners' spin: they sleep, the next submit wakes */
		r->n_idles++;
		usleep(200);
		break;
	}
	{
		struct exec_item *list = executor_take_done(r->ex);

		if (!list)
			r->n_empty_polls++;
		reactor_complete(r, list);
	}
	return 0;
}

static void stream(uint32_t n_runners, uint64_t n_total)
{
	struct reactor *r = calloc(1, sizeof(*r));
	uint64_t rng = mix64(n_runners), t0 = spin_now_ns(), deadline = t0 + 240ull * 1000000000ull;

	assert_non_null(r);
	r->returned = calloc(n_total, 1);
	assert_non_null(r->returned);
	r->n_total = n_total;
	r->window = 2 * n_runners + 1;
	if (r->window > MAX_WINDOW)
		r->window = MAX_WINDOW;
	run_stats_init(&r->stats, n_runners);
	ASSERT_OK(executor_new(n_runners, &r->ex));

	while (r->n_returned < n_total && !recorded_errors()) {
		rng = mix64(rng);
		/* sometimes top the window up, sometimes add one item */
		while (r->n_submitted < n_total && r->in_flight < r->window) {
			reactor_submit_one(r);
			if (rng & 0x100)
				break;
		}
		ASSERT_OK(reactor_wait(r, rng >> 20));
		if (spin_now_ns() > deadline)
			fail_msg("%" PRIu64 " of %" PRIu64 " items back after 240 s", r->n_returned,
			         n_total);
	}
	assert_no_errors();
	ASSERT_EQ(r->n_returned, n_total);
	ASSERT_EQ(r->in_flight, 0);
	for (uint64_t i = 0; i < n_total; i++)
		if (r->returned[i] != 1)
			fail_msg("item %" PRIu64 " came back %u times", i, r->returned[i]);
	assert_null(executor_take_done(r->ex));
	print_message("  %u runners: %" PRIu64 " items in %.2f s (at most %u at once; "
	              "%lu polls, %lu spins, %lu idles, %lu empty takes)\n",
	              n_runners, n_total, (double)(spin_now_ns() - t0) / 1e9,
	              atomic_load(&r->stats.max_running), r->n_polls, r->n_spins, r->n_idles,
	              r->n_empty_polls);
	r->ex = executor_free(r->ex);
	free(r->returned);
	free(r);
}

static void test_executor_stream(void **state)
{
	(void)state;
	for (uint32_t n_runners = 1; n_runners <= 4; n_runners++)
		stream(n_runners, arg_items);
}

/* ------------------------------------------------------------ executor_free */

struct opener {
	struct run_stats *stats;
	pthread_t thread;
};

static void *opener_main(void *arg)
{
	struct opener *o = arg;

	usleep(30000); /* the test's thread is inside executor_free() by now, mostly */
	atomic_store_explicit(&o->stats->gate, true, memory_order_relaxed);
	return NULL;
}

/*
 * Every runner holds a gated item and more are queued; executor_free() is
 * called while they run and returns after they finish (the gate opens from
 * another thread). The running items finished and their writes are visible
 * (joined); a queued one either never ran or ran whole (if a runner freed
 * before the stop took it); none ran twice; the items are the test's to
 * free, and no fd stays open.
 */
static void test_executor_free_in_flight(void **state)
{
	enum { QUEUED = 3 };

	(void)state;
	for (uint32_t n_runners = 1; n_runners <= 4; n_runners++) {
		uint32_t n = n_runners + QUEUED, ran = 0;
		struct titem *items = calloc(n, sizeof(*items));
		struct executor *ex = NULL;
		struct run_stats st;
		struct opener o = {.stats = &st};
		uint64_t deadline;

		assert_non_null(items);
		run_stats_init(&st, n_runners);
		ASSERT_OK(executor_new(n_runners, &ex));
		for (uint32_t i = 0; i < n; i++) {
			titem_init(&items[i], &st, i, true);
			executor_submit(ex, &items[i].item);
		}
		/* wait until every runner is inside an item */
		deadline = spin_now_ns() + GATE_TIMEOUT_NS;
		while (atomic_load(&st.started) < n_runners && spin_now_ns() < deadline)
			usleep(100);
		ASSERT_EQ(atomic_load(&st.started), n_runners);
		ASSERT_EQ(pthread_create(&o.thread, NULL, opener_main, &o), 0);
		ex = executor_free(ex);
		assert_null(ex);
		ASSERT_EQ(pthread_join(o.thread, NULL), 0);
		assert_no_errors();
		for (uint32_t i = 0; i < n; i++) {
			unsigned runs = atomic_load(&items[i].runs);

			if (runs > 1 || (runs == 1 && (!items[i].finished ||
			                               items[i].out != item_result(items[i].in))))
				fail_msg("item %u: runs %u, finished %d after executor_free()", i,
				         runs, items[i].finished);
			ran += runs;
		}
		if (ran < n_runners || ran > n)
			fail_msg("%u items ran on %u runners of %u submitted", ran, n_runners, n);
		print_message("  %u runners: %u of %u items ran before the stop\n", n_runners, ran,
		              n);
		free(items);
	}
}

/* executor_free() with the runners asleep (idle past the spin), spinning
 * (right after an item came back) or just started, many times. */
static void test_executor_free_idle_and_spinning(void **state)
{
	unsigned rounds = arg_items >= 10000 ? 200 : 30;

	(void)state;
	for (unsigned i = 0; i < rounds; i++) {
		struct executor *ex = NULL;
		struct run_stats st;
		struct titem ti;
		struct pollfd pfd;

		run_stats_init(&st, 1 + i % 4);
		ASSERT_OK(executor_new(1 + i % 4, &ex));
		if (i % 3 != 0) {
			titem_init(&ti, &st, i, false);
			executor_submit(ex, &ti.item);
			pfd = (struct pollfd){.fd = executor_event_fd(ex), .events = POLLIN};
			ASSERT_EQ(poll(&pfd, 1, LOST_WAKEUP_MS), 1);
			executor_ack_event(ex);
			assert_ptr_equal(executor_take_done(ex), &ti.item);
			assert_null(ti.item.next);
			ASSERT_EQ(ti.out, item_result(ti.in));
			if (i % 3 == 2)
				usleep(2000);
		}
		ex = executor_free(ex);
		assert_no_errors();
	}
	assert_null(executor_free(NULL));
	{
		struct executor *ex = NULL;

		ASSERT_ERRNO(executor_new(0, &ex), EINVAL);
		ASSERT_ERRNO(executor_new(65, &ex), EINVAL);
		assert_null(ex);
	}
}

/*
 * The watcher handshake step by step: while the watcher polls, a finished
 * item writes no event; once it says it sleeps, one does; an item that
 * finished while it polled makes executor_watcher_sleep() say "do not".
 */
static void test_executor_watcher(void **state)
{
	struct executor *ex = NULL;
	struct run_stats st;
	struct titem ti;
	struct pollfd pfd;
	struct exec_item *done = NULL;
	uint64_t deadline;

	(void)state;
	run_stats_init(&st, 1);
	ASSERT_OK(executor_new(1, &ex));
	pfd = (struct pollfd){.fd = executor_event_fd(ex), .events = POLLIN};

	/* polling: the item comes back through take_done, the fd stays quiet */
	executor_watcher_polling(ex);
	titem_init(&ti, &st, 1, false);
	executor_submit(ex, &ti.item);
	deadline = spin_now_ns() + (uint64_t)LOST_WAKEUP_MS * 1000000;
	while (!(done = executor_take_done(ex)) && spin_now_ns() < deadline)
		sched_yield();
	assert_ptr_equal(done, &ti.item);
	ASSERT_EQ(poll(&pfd, 1, 0), 0);

	/* an item that finished while we polled: do not sleep, take it */
	titem_init(&ti, &st, 2, false);
	executor_submit(ex, &ti.item);
	usleep(20000);
	assert_false(executor_watcher_sleep(ex));
	ASSERT_EQ(poll(&pfd, 1, 0), 0);
	assert_ptr_equal(executor_take_done(ex), &ti.item);

	/* asleep: the next item writes the fd */
	assert_true(executor_watcher_sleep(ex));
	titem_init(&ti, &st, 3, false);
	executor_submit(ex, &ti.item);
	ASSERT_EQ(poll(&pfd, 1, LOST_WAKEUP_MS), 1);
	executor_ack_event(ex);
	assert_ptr_equal(executor_take_done(ex), &ti.item);
	ex = executor_free(ex);
	assert_no_errors();
}

int main(int argc, char **argv)
{
	const char *env = getenv("MOE_STRESS_ITERS");
	const char *arg = argc > 1 ? argv[1] : env;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_executor_stream, setup, fd_check_teardown),
	    cmocka_unit_test_setup_teardown(test_executor_free_in_flight, setup, fd_check_teardown),
	    cmocka_unit_test_setup_teardown(test_executor_free_idle_and_spinning, setup,
	                                    fd_check_teardown),
	    cmocka_unit_test_setup_teardown(test_executor_watcher, setup, fd_check_teardown),
	};

	if (arg && *arg) {
		char *end;

		errno = 0;
		arg_items = strtoul(arg, &end, 10);
		if (errno || *end || arg_items < 10) {
			fprintf(stderr, "usage: %s [ITEMS >= 10]\n", argv[0]);
			return 2;
		}
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
