/* SPDX-License-Identifier: MIT */
/*
 * Round-robin between clients when runs are scarce: with runs_in_flight = 1
 * and merging off, two clients each queue N batches at once; the runs must
 * take turns between them (sched.h: runs start round-robin over the
 * clients with work), not serve one client's whole queue first.
 *
 * The test process holds both clients and reaps from both rings in turn,
 * recording which client each completion belongs to. A run of large
 * batches takes milliseconds, far longer than a turn of the loop, so the
 * order reaped is the order run; the assertion allows one swap anyway: in
 * the completions while both clients still have batches queued, no client
 * may have three in a row. Serving one queue first gives N in a row.
 *
 * usage: it_round_robin MOED MOECTL
 */
#include "test_assert.h"
#include "test_daemon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moe.h>

#define N 6     /* batches per client */
#define T 1024  /* tokens per batch: a run of milliseconds */

static const char *arg_moed;
static struct test_daemon daemon_;

struct rr_client {
	struct moe_client *c;
	float *x[N], *y[N];
	unsigned done;
};

static void rr_open(struct rr_client *cl, const char *name, uint64_t seed)
{
	struct moe_client_opts o;
	struct moe_model_info mi;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = name;
	o.arena_size = 64u << 20;
	ASSERT_OK(moe_connect(&o, &cl->c));
	mi.size = sizeof(mi);
	ASSERT_OK(moe_model_info_get(cl->c, &mi));
	for (unsigned i = 0; i < N; i++) {
		ASSERT_OK(moe_buf_alloc(cl->c, (size_t)T * mi.d_model * 4, (void **)&cl->x[i]));
		ASSERT_OK(moe_buf_alloc(cl->c, (size_t)T * mi.d_model * 4, (void **)&cl->y[i]));
		test_fill_normal(cl->x[i], (size_t)T * mi.d_model, &seed);
	}
}

static void rr_submit_all(struct rr_client *cl)
{
	for (unsigned i = 0; i < N; i++) {
		struct moe_request rq;

		moe_request_init(&rq);
		rq.user_data = i;
		rq.layer = 0;
		rq.n_tokens = T;
		rq.input = cl->x[i];
		rq.output = cl->y[i];
		rq.flags = MOE_REQ_NO_MERGE;
		ASSERT_OK(moe_submit(cl->c, &rq));
	}
}

/* Reap what @cl has; append its letter to @seq for each completion. */
static void rr_reap(struct rr_client *cl, char letter, char *seq, unsigned *n_seq)
{
	struct moe_completion done[N];
	int n = moe_reap(cl->c, done, N);

	assert_true(n >= 0);
	for (int i = 0; i < n; i++) {
		assert_int_equal(done[i].status, 0);
		assert_int_equal(done[i].user_data, cl->done); /* in submission order */
		cl->done++;
		seq[(*n_seq)++] = letter;
	}
}

static void test_runs_take_turns(void **state)
{
	const char *extra[] = { "--set", "runs_in_flight=1", "--set", "merge_window_us=0", NULL };
	struct rr_client a = { 0 }, b = { 0 };
	char seq[2 * N + 1] = "";
	unsigned n_seq = 0, both = 0, longest = 1, streak = 1;
	int64_t deadline;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	rr_open(&a, "rr-a", 1);
	rr_open(&b, "rr-b", 2);
	rr_submit_all(&a);
	rr_submit_all(&b);
	deadline = test_now_ns() + 120 * 1000000000ll;
	while (n_seq < 2 * N) {
		rr_reap(&a, 'A', seq, &n_seq);
		rr_reap(&b, 'B', seq, &n_seq);
		assert_true(test_now_ns() < deadline);
	}
	/* the completions while both still had batches queued */
	for (unsigned i = 0, na = 0, nb = 0; i < n_seq && na < N && nb < N; i++) {
		na += seq[i] == 'A';
		nb += seq[i] == 'B';
		both = i + 1;
	}
	for (unsigned i = 1; i < both; i++) {
		streak = seq[i] == seq[i - 1] ? streak + 1 : 1;
		longest = streak > longest ? streak : longest;
	}
	print_message("completion order: %s\n", seq);
	if (longest >= 3)
		fail_msg("one client had %u runs in a row while the other waited: %s", longest,
			 seq);
	moe_close(a.c);
	moe_close(b.c);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
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
		cmocka_unit_test_setup_teardown(test_runs_take_turns, setup, teardown),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, NULL, NULL);
}
