/* SPDX-License-Identifier: MIT */
/*
 * Inline runs (inline_run_bytes, sched.c): a run whose weights are at most
 * the bound computes on the reactor thread; larger ones go to a runner; the
 * results are the same either way; and a client that streams such runs
 * cannot hold the reactor from other clients.
 *
 * moed serves the embedded default model (E8, top-2, d256, ff512 gated:
 * 1.5 MiB of float32 weights per expert), with inline_run_bytes = 4 MiB:
 * one token reaches 2 experts (3 MiB, inline), eight tokens all eight
 * (12 MiB, a runner's). totals.inline_runs counts the former.
 *
 *   test_inline_bound: a 1-token batch runs inline (inline_runs 1 of 1
 *     engine run), an 8-token batch does not (inline_runs still 1 of 2);
 *     both within 1e-4 of the embedded engine. Then moed restarted with
 *     inline_run_bytes = 0: the same 1-token batch on a runner, bitwise the
 *     inline result, and inline_runs stays 0.
 *   test_inline_flood_fair: client A (a forked process) keeps 32 one-token
 *     batches in flight, each inline, without pause until told to stop;
 *     meanwhile client B connects and runs a 1-token forward and the status
 *     answers, each while A is still streaming (A's completions keep
 *     growing after them). Computing inline must not make the reactor take
 *     a client's whole queue at once (sched_start_ready visits each client
 *     once per pass).
 *
 * usage: it_inline_runs MOED MOECTL
 */
#include "test_assert.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"

#define INLINE_BOUND "inline_run_bytes=4194304"
/* the inline and the runner's results are compared bitwise across two starts: the same kernels */
#define FIXED_KERNELS "kernel_calibration=no"
#define T_BIG        8
#define A_DEPTH      32
#define ATOL         1e-4
#define RTOL         1e-4
#define TIE_MARGIN   1e-3
#define TIMEOUT_MS   60000

static const char *arg_moed, *arg_moectl;
static struct test_daemon daemon_;

static struct moe_client *client_open(const char *name, uint32_t d_model, float **x, float **y,
				      uint32_t rows)
{
	struct moe_client_opts o;
	struct moe_client *c;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = name;
	o.arena_size = 16u << 20;
	ASSERT_OK(moe_connect(&o, &c));
	ASSERT_OK(moe_buf_alloc(c, (size_t)rows * d_model * 4, (void **)x));
	ASSERT_OK(moe_buf_alloc(c, (size_t)rows * d_model * 4, (void **)y));
	return c;
}

static void forward(struct moe_client *c, const float *x, float *y, uint32_t T)
{
	struct moe_request rq;
	struct moe_completion done;

	moe_request_init(&rq);
	rq.layer = 0;
	rq.n_tokens = T;
	rq.input = x;
	rq.output = y;
	ASSERT_OK(moe_forward(c, &rq, &done));
	ASSERT_EQ(done.status, 0);
}

static int64_t status_int(const char *path)
{
	return test_status_int(daemon_.socket, path);
}

static void test_inline_bound(void **state)
{
	const char *bounded[] = { "--set", INLINE_BOUND, "--set", FIXED_KERNELS, NULL };
	const char *off[] = { "--set", "inline_run_bytes=0", "--set", FIXED_KERNELS, NULL };
	struct test_ref ref;
	struct moe_client *c;
	float *x, *y, *y_inline;
	uint64_t seed = 7;
	uint32_t d;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, bounded));
	ASSERT_OK(test_ref_open(&ref, daemon_.model_path));
	d = ref.d_model;
	c = client_open("inline", d, &x, &y, T_BIG);
	test_fill_normal(x, (size_t)T_BIG * d, &seed);
	y_inline = calloc(d, sizeof(float));
	assert_non_null(y_inline);

	forward(c, x, y, 1);
	memcpy(y_inline, y, d * sizeof(float));
	ASSERT_EQ(test_ref_check(&ref, 0, x, 1, y, ATOL, RTOL, TIE_MARGIN, "inline T=1"), 0);
	ASSERT_EQ(status_int("totals.inline_runs"), 1);
	ASSERT_EQ(status_int("totals.engine_runs"), 1);

	forward(c, x, y, T_BIG);
	ASSERT_EQ(test_ref_check(&ref, 0, x, T_BIG, y, ATOL, RTOL, TIE_MARGIN, "runner T=8"), 0);
	ASSERT_EQ(status_int("totals.inline_runs"), 1);
	ASSERT_EQ(status_int("totals.engine_runs"), 2);
	moe_close(c);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);

	/* the same batch on a runner: the same engine call, so the same bits */
	ASSERT_OK(test_daemon_start(&daemon_, off));
	c = client_open("runner", d, &x, &y, T_BIG);
	seed = 7;
	test_fill_normal(x, (size_t)T_BIG * d, &seed);
	forward(c, x, y, 1);
	assert_memory_equal(y, y_inline, d * sizeof(float));
	ASSERT_EQ(status_int("totals.inline_runs"), 0);
	ASSERT_EQ(status_int("totals.engine_runs"), 1);
	moe_close(c);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	free(y_inline);
	test_ref_close(&ref);
}

/* What A publishes, in memory shared with the test. */
struct a_report {
	atomic_ullong completed;
	atomic_bool stop;
};

/* A's one-token batch number @k of layer 0, rows @x into @y. */
static void a_submit(struct moe_client *c, unsigned k, const float *x, float *y)
{
	struct moe_request rq;

	moe_request_init(&rq);
	rq.user_data = k;
	rq.n_tokens = 1;
	rq.input = x;
	rq.output = y;
	CHILD_OK(moe_submit(c, &rq));
}

/* Client A: A_DEPTH one-token batches in flight at all times until told to stop. */
static void __attribute__((noreturn)) a_main(struct a_report *rep, uint32_t d)
{
	struct moe_client_opts o;
	struct moe_client *c;
	float *x[A_DEPTH], *y[A_DEPTH];
	uint64_t seed = 3;
	int64_t deadline = test_now_ns() + (int64_t)TIMEOUT_MS * 1000000;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "flood";
	o.arena_size = 4u << 20;
	o.sq_entries = 64;
	o.cq_entries = 64;
	CHILD_OK(moe_connect(&o, &c));
	for (unsigned i = 0; i < A_DEPTH; i++) {
		CHILD_OK(moe_buf_alloc(c, d * 4, (void **)&x[i]));
		CHILD_OK(moe_buf_alloc(c, d * 4, (void **)&y[i]));
		test_fill_normal(x[i], d, &seed);
	}
	for (unsigned i = 0; i < A_DEPTH; i++)
		a_submit(c, i, x[i], y[i]);
	while (!atomic_load(&rep->stop)) {
		struct moe_completion done[A_DEPTH];
		int n = moe_reap(c, done, A_DEPTH);

		CHILD_CHECK(n >= 0, "reap: %s", strerror(-n));
		CHILD_CHECK(test_now_ns() < deadline, "never told to stop");
		for (int i = 0; i < n; i++) {
			unsigned k = (unsigned)done[i].user_data;

			CHILD_CHECK(done[i].status == 0, "batch failed: %d", done[i].status);
			a_submit(c, k, x[k], y[k]);
		}
		atomic_fetch_add(&rep->completed, (unsigned long long)n);
	}
	moe_close(c);
	_exit(0);
}

/* Wait until A completed more than @than batches: it is still streaming. */
static void a_still_streaming(struct a_report *rep, unsigned long long than, const char *after)
{
	int64_t deadline = test_now_ns() + (int64_t)TIMEOUT_MS * 1000000;

	while (atomic_load(&rep->completed) <= than) {
		if (test_now_ns() > deadline)
			fail_msg("client A made no progress after %s", after);
		test_sleep_ms(1);
	}
}

static void test_inline_flood_fair(void **state)
{
	const char *bounded[] = { "--set", INLINE_BOUND, NULL };
	const char *const status_argv[] = { arg_moectl, "--socket", daemon_.socket, "status", NULL };
	struct a_report *rep;
	struct test_ref ref;
	struct moe_client *b;
	float *x, *y;
	uint64_t seed = 11;
	unsigned long long seen;
	int exit_status;
	pid_t a;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, bounded));
	ASSERT_OK(test_ref_open(&ref, daemon_.model_path));
	rep = mmap(NULL, sizeof(*rep), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(rep != MAP_FAILED);
	a = test_fork();
	if (a == 0)
		a_main(rep, ref.d_model);
	a_still_streaming(rep, 1000, "its start");

	b = client_open("b", ref.d_model, &x, &y, 1);
	test_fill_normal(x, ref.d_model, &seed);
	forward(b, x, y, 1);
	ASSERT_EQ(test_ref_check(&ref, 0, x, 1, y, ATOL, RTOL, TIE_MARGIN, "B beside A"), 0);
	seen = atomic_load(&rep->completed);
	a_still_streaming(rep, seen, "B's forward");

	ASSERT_EQ(test_run(status_argv, "/dev/null", TIMEOUT_MS), 0);
	seen = atomic_load(&rep->completed);
	a_still_streaming(rep, seen, "the status");
	assert_true(status_int("totals.inline_runs") > 1000);

	atomic_store(&rep->stop, true);
	ASSERT_OK(test_child_wait(a, TIMEOUT_MS, &exit_status));
	ASSERT_EQ(exit_status, 0);
	moe_close(b);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	munmap(rep, sizeof(*rep));
	test_ref_close(&ref);
}

static int setup(void **state)
{
	(void)state;
	return test_daemon_init(&daemon_, arg_moed);
}

static int teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_inline_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inline_flood_fair, setup, teardown),
	};

	if (argc < 3) {
		fprintf(stderr, "usage: %s MOED MOECTL\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	arg_moectl = argv[2];
	return cmocka_run_group_tests(tests, NULL, NULL);
}
