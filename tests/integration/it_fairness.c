/* SPDX-License-Identifier: MIT */
/*
 * Head-of-line blocking: one client's deep backlog must not hold up another
 * client's batch, a new connection or the status.
 *
 * moed serves the embedded default model (a 1024-token batch takes tens of
 * milliseconds; ten times that in a sanitizer build). Client A, a forked
 * process, submits N_A batches of 1024 tokens with MOE_REQ_NO_MERGE at once
 * (all of them before it says so through a pipe), then only reaps; after
 * each completion it publishes how many of its batches have completed, in
 * memory shared with the test. Once the status JSON shows A's queue deep
 * (queued >= N_A / 2), the test process, in this order:
 *
 *   1. connects client B and runs a 1-token forward;
 *   2. connects a new client and runs a 1-token forward;
 *   3. runs `moectl status` (argv[2]), which must exit 0;
 *
 * and after each step reads A's completed count, which must still be below
 * N_A: each event happened while A's backlog had not ended. The assertions
 * are about the order of events, never about wall-clock limits. A checks
 * that every one of its batches completes with status 0 and in the order
 * submitted (a client's valid batches complete in submission order,
 * sched.h). B's and the new client's results are compared with the
 * embedded engine. moed exits 0 on SIGTERM.
 *
 * Before the scheduler (one run in flight per client, round-robin) and the
 * executor (the reactor never computes), B's batch and the rest waited for
 * A's whole backlog.
 *
 * usage: it_fairness MOED MOECTL
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"

#define T_A              1024 /* tokens of each of A's batches */
#define T_SMALL          1    /* tokens of B's and the new client's batch */
#define CHILD_TIMEOUT_MS 240000
#define DEEP_TIMEOUT_MS  20000
#define ATOL             1e-4
#define RTOL             1e-4
#define TIE_MARGIN       1e-3

static const char *arg_moed, *arg_moectl;
static struct test_daemon daemon_;
static unsigned n_a; /* A's batches: 32, fewer in a sanitizer build */

/* What A publishes, in memory shared with the test. */
struct a_report {
	atomic_uint completed; /* A's batches completed so far */
	int finished;          /* 1 once every check passed */
};
static struct a_report *a_rep; /* MAP_SHARED */

/* Client A: submit every batch, say so, then reap them in order. */
static void __attribute__((noreturn)) a_child(int ready_fd)
{
	struct moe_completion done[16];
	struct moe_client_opts o;
	struct moe_model_info mi;
	struct moe_request rq;
	struct moe_client *c;
	uint64_t seed = 0xa;
	unsigned next = 0;
	float *x, *y;
	char byte = 1;

	alarm(CHILD_TIMEOUT_MS / 1000);
	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "fair-a";
	o.sq_entries = 64;
	o.cq_entries = 128;
	o.arena_size = 8u << 20;
	CHILD_OK(moe_connect(&o, &c));
	mi.size = sizeof(mi);
	CHILD_OK(moe_model_info_get(c, &mi));
	CHILD_OK(moe_buf_alloc(c, (size_t)T_A * mi.d_model * sizeof(float), (void **)&x));
	CHILD_OK(moe_buf_alloc(c, (size_t)T_A * mi.d_model * sizeof(float), (void **)&y));
	test_fill_normal(x, (size_t)T_A * mi.d_model, &seed);

	/* One input for all: A's runs never overlap (one run in flight per client). */
	for (unsigned i = 0; i < n_a; i++) {
		moe_request_init(&rq);
		rq.user_data = i;
		rq.layer = i % mi.n_layers;
		rq.n_tokens = T_A;
		rq.flags = MOE_REQ_NO_MERGE;
		rq.input = x;
		rq.output = y;
		CHILD_OK(moe_submit(c, &rq));
	}
	CHILD_CHECK(write(ready_fd, &byte, 1) == 1, "ready: %s", strerror(errno));

	while (next < n_a) {
		int n = moe_wait(c, done, 16, (int64_t)CHILD_TIMEOUT_MS * 1000000);

		CHILD_OK(n);
		for (int i = 0; i < n; i++, next++) {
			CHILD_CHECK(done[i].status == 0, "batch %llu: status %d (%s)",
			            (unsigned long long)done[i].user_data, done[i].status,
			            moe_strerror(done[i].status));
			CHILD_CHECK(done[i].user_data == next,
			            "completion %u carries user_data %llu: out of submission order",
			            next, (unsigned long long)done[i].user_data);
			atomic_store(&a_rep->completed, next + 1);
		}
	}
	moe_buf_free(c, x);
	moe_buf_free(c, y);
	moe_close(c);
	a_rep->finished = 1;
	_exit(0);
}

/* Connect @name, run one verified T_SMALL-token forward, disconnect. */
static void small_forward(const char *name, uint64_t seed)
{
	struct moe_client_opts o;
	struct moe_model_info mi;
	struct moe_completion done;
	struct moe_request rq;
	struct moe_client *c;
	struct test_ref ref;
	float *x, *y;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = name;
	o.arena_size = 1u << 20;
	ASSERT_OK(moe_connect(&o, &c));
	mi.size = sizeof(mi);
	ASSERT_OK(moe_model_info_get(c, &mi));
	ASSERT_OK(moe_buf_alloc(c, (size_t)T_SMALL * mi.d_model * sizeof(float), (void **)&x));
	ASSERT_OK(moe_buf_alloc(c, (size_t)T_SMALL * mi.d_model * sizeof(float), (void **)&y));
	test_fill_normal(x, (size_t)T_SMALL * mi.d_model, &seed);
	moe_request_init(&rq);
	rq.user_data = seed;
	rq.n_tokens = T_SMALL;
	rq.input = x;
	rq.output = y;
	ASSERT_OK(moe_forward(c, &rq, &done));
	ASSERT_EQ(done.status, 0);
	ASSERT_EQ(done.user_data, seed);

	/* after the forward: the reference engine is not part of what is timed */
	ASSERT_OK(test_ref_open(&ref, daemon_.model_path));
	ASSERT_EQ(test_ref_check(&ref, 0, x, T_SMALL, y, ATOL, RTOL, TIE_MARGIN, name), 0);
	test_ref_close(&ref);
	moe_buf_free(c, x);
	moe_buf_free(c, y);
	moe_close(c);
}

/* `moectl --socket SOCKET status`, its output discarded; its exit status. */
static int moectl_status(void)
{
	int status;
	pid_t pid = test_fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		execl(arg_moectl, arg_moectl, "--socket", daemon_.socket, "status", (char *)NULL);
		_exit(127);
	}
	ASSERT_OK(test_child_wait(pid, 60000, &status));
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* A's completed count at this moment; it must not have reached n_a. */
static unsigned a_expect_backlog(const char *event)
{
	unsigned done = atomic_load(&a_rep->completed);

	fprintf(stderr, "test: %s: A had completed %u of %u batches\n", event, done, n_a);
	if (done >= n_a)
		fail_msg("%s happened only after A's whole backlog (%u batches) had completed",
		         event, n_a);
	return done;
}

/*
 * Poll the status until A has at least @want batches queued; returns the
 * last count. Each answer must come while A's backlog lasts.
 */
static int64_t a_wait_queued(int64_t want)
{
	int64_t deadline = test_now_ns() + (int64_t)DEEP_TIMEOUT_MS * 1000000, queued = -1;

	while (test_now_ns() < deadline) {
		json_t *st = test_status_get(daemon_.socket);
		json_t *a = st ? test_status_client(st, "fair-a") : NULL;

		a_expect_backlog("a status answer");
		queued = a ? (int64_t)json_integer_value(json_object_get(a, "queued")) : -1;
		json_decref(st);
		if (queued >= want)
			break;
		test_sleep_ms(2);
	}
	return queued;
}

static void test_backlog_blocks_nobody(void **state)
{
	int ready[2];
	int64_t queued;
	json_t *st;
	pid_t pid;
	char byte;

	(void)state;
	memset(a_rep, 0, sizeof(*a_rep));
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	ASSERT_OK(pipe2(ready, O_CLOEXEC));
	pid = test_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(ready[0]);
		a_child(ready[1]);
	}
	close(ready[1]);
	ASSERT_EQ(read(ready[0], &byte, 1), 1); /* A submitted everything */
	close(ready[0]);

	queued = a_wait_queued(n_a / 2);
	fprintf(stderr, "test: A's queue: %lld batches\n", (long long)queued);
	if (queued < n_a / 2)
		fail_msg("A's queue never reached %u batches (last seen %lld)", n_a / 2,
		         (long long)queued);
	a_expect_backlog("A's queue deep");

	small_forward("fair-b", 0xb);
	a_expect_backlog("B's completion");
	small_forward("fair-new", 0xc);
	a_expect_backlog("the new client's forward");
	ASSERT_EQ(moectl_status(), 0);
	a_expect_backlog("moectl status");

	ASSERT_OK(test_children_wait(&pid, 1, CHILD_TIMEOUT_MS));
	ASSERT_EQ(a_rep->finished, 1);
	ASSERT_EQ(atomic_load(&a_rep->completed), n_a);

	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "totals.batches"), n_a + 2);
	ASSERT_EQ(test_json_int(st, "totals.errors"), 0);
	json_decref(st);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static int group_setup(void **state)
{
	(void)state;
	a_rep =
	    mmap(NULL, sizeof(*a_rep), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (a_rep == MAP_FAILED)
		return -1;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	munmap(a_rep, sizeof(*a_rep));
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_backlog_blocks_nobody),
	};

	if (argc < 3) {
		fprintf(stderr, "usage: %s MOED MOECTL\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	arg_moectl = argv[2];
	n_a = test_scale(32, 24);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
