/* SPDX-License-Identifier: MIT */
/*
 * A bad member of a merged run fails alone, before the engine call, and
 * costs its partner nothing.
 *
 * moed runs the embedded default model with a merge window of 200 ms, so
 * that two batches submitted together always merge. Two client processes,
 * X and Y, run three rounds. In each round each first runs its batch alone
 * (MOE_REQ_NO_MERGE) and keeps the result; then both wait at a pipe
 * barrier, the test reads totals.engine_runs, lets both submit the same
 * batches again together, and reads engine_runs once both have completed
 * (and before either goes on to the next round's alone run):
 *
 *   1. X's rows hold a NaN: X completes with -EDOM and its output buffer is
 *      untouched; Y completes with 0 and its output equals, bitwise, its
 *      alone output.
 *   2. X's rows hold a finite 1e30 (above the 2^64 input bound): X -ERANGE,
 *      Y as in round 1.
 *   3. Both valid: both flagged MERGED, both outputs equal to their alone
 *      outputs within 1e-4 (not bitwise: with more rows per expert the
 *      merged GEMMs may take other kernels), near-tie tokens excepted.
 *
 * Each pair costs exactly one engine run (the bad member leaves the run
 * before the engine call: no failed merged call followed by one run per
 * member). In rounds 1 and 2 that also shows the pair was one run: X on its
 * own would have cost an engine call of its own (a run of one is checked by
 * the engine itself). Round 3 counts two merged batches. moed exits 0 on
 * SIGTERM.
 *
 * usage: it_merge_precheck MOED [MOECTL]
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"

#define ROUNDS           3
#define CHILD_TIMEOUT_MS 120000
#define X                0 /* the client whose rows go bad */
#define Y                1
#define ATOL             1e-4
#define RTOL             1e-4
#define TIE_MARGIN       1e-3

static const uint32_t client_tokens[2] = {5, 11};
static const int x_expect[ROUNDS] = {-EDOM, -ERANGE, 0};

static const char *arg_moed;
static struct test_daemon daemon_;

struct child_report {
	struct moe_completion alone[ROUNDS], pair[ROUNDS];
	int finished;
};
static struct child_report *reports; /* [2], MAP_SHARED */

/* Round @round's rows of client @index; X's go bad in rounds 0 and 1. */
static void rows_fill(unsigned index, unsigned round, float *x, uint32_t T, uint32_t d)
{
	uint64_t seed = 77 * (index + 1) + round;

	test_fill_normal(x, (size_t)T * d, &seed);
	if (index != X)
		return;
	if (round == 0)
		x[(size_t)2 * d + 3] = NAN;
	else if (round == 1)
		x[(size_t)3 * d + 1] = 1e30f;
}

/*
 * A merged run's output against the same batch alone: within ATOL/RTOL
 * (more rows per expert may take other GEMM kernels, which round
 * differently), except near-tie tokens, whose routing may differ.
 */
static void merged_expect_close(unsigned index, struct test_ref *ref, uint32_t layer,
                                const float *x, const float *y, const float *alone_y, uint32_t T,
                                uint32_t d)
{
	for (uint32_t t = 0; t < T; t++) {
		if (test_ref_route_margin(ref, layer, x + (size_t)t * d) < TIE_MARGIN)
			continue;
		CHILD_CHECK(test_count_mismatches("merged vs alone", y + (size_t)t * d,
		                                  alone_y + (size_t)t * d, d, ATOL, RTOL) == 0,
		            "client %u: token %u of the merged run differs from the alone run",
		            index, t);
	}
}

static void child_run(unsigned index, int ready_fd, const int *go_fds, const int *next_fds)
{
	struct child_report *rep = &reports[index];
	const uint32_t T = client_tokens[index];
	struct moe_client_opts o;
	struct moe_model_info mi;
	struct moe_client *c;
	struct moe_request rq;
	struct test_ref ref;
	float *x, *y, *alone_y;
	size_t bytes;
	char byte = 1;

	alarm(CHILD_TIMEOUT_MS / 1000);
	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = index == X ? "precheck-x" : "precheck-y";
	o.arena_size = 4u << 20;
	CHILD_OK(moe_connect(&o, &c));
	mi.size = sizeof(mi);
	CHILD_OK(moe_model_info_get(c, &mi));
	bytes = (size_t)T * mi.d_model * sizeof(float);
	CHILD_OK(moe_buf_alloc(c, bytes, (void **)&x));
	CHILD_OK(moe_buf_alloc(c, bytes, (void **)&y));
	alone_y = malloc(bytes);
	CHILD_CHECK(alone_y, "malloc");
	CHILD_OK(test_ref_open(&ref, daemon_.model_path));

	for (unsigned round = 0; round < ROUNDS; round++) {
		const int expect = index == X ? x_expect[round] : 0;
		struct moe_completion *alone = &rep->alone[round], *pair = &rep->pair[round];

		rows_fill(index, round, x, T, mi.d_model);
		moe_request_init(&rq);
		rq.layer = round % mi.n_layers;
		rq.n_tokens = T;
		rq.input = x;
		rq.output = y;
		rq.user_data = round;
		rq.flags = MOE_REQ_NO_MERGE;
		memset(y, 0xff, bytes);
		CHILD_OK(moe_forward(c, &rq, alone));
		CHILD_CHECK(alone->status == expect, "client %u round %u alone: status %d, want %d",
		            index, round, alone->status, expect);
		memcpy(alone_y, y, bytes);

		/* the barrier: the test reads engine_runs, then both submit at once */
		CHILD_CHECK(write(ready_fd, &byte, 1) == 1, "ready: %s", strerror(errno));
		CHILD_CHECK(read(go_fds[round], &byte, 1) == 0, "go: expected EOF");
		rq.flags = 0;
		memset(y, 0xff, bytes);
		CHILD_OK(moe_forward(c, &rq, pair));
		CHILD_CHECK(write(ready_fd, &byte, 1) == 1, "done: %s", strerror(errno));
		/* until the test has read the pair's counters */
		CHILD_CHECK(read(next_fds[round], &byte, 1) == 0, "next: expected EOF");

		CHILD_CHECK(pair->status == expect, "client %u round %u paired: status %d, want %d",
		            index, round, pair->status, expect);
		if (round < 2)
			/* a failed batch writes nothing; a good one alone what it gets alone */
			CHILD_CHECK(
			    memcmp(y, alone_y, bytes) == 0,
			    "client %u round %u: the paired output differs from the alone one "
			    "(first floats %a / %a)",
			    index, round, (double)y[0], (double)alone_y[0]);
		else
			merged_expect_close(index, &ref, rq.layer, x, y, alone_y, T, mi.d_model);
		if (round == 2)
			CHILD_CHECK(pair->flags & MOE_COMPLETION_MERGED,
			            "client %u round %u: the valid pair did not run merged", index,
			            round);
	}
	test_ref_close(&ref);
	free(alone_y);
	moe_buf_free(c, x);
	moe_buf_free(c, y);
	moe_close(c);
	rep->finished = 1;
	_exit(0);
}

/* Read one byte from each child; false when one died (the wait says which). */
static bool both_reached(int fd)
{
	char byte;

	for (unsigned i = 0; i < 2; i++)
		if (read(fd, &byte, 1) != 1)
			return false;
	return true;
}

static int64_t status_int(const char *path)
{
	return test_status_int(daemon_.socket, path);
}

static void test_merge_precheck(void **state)
{
	const char *extra[] = {"--set", "merge_window_us=200000", NULL};
	int64_t runs_before[ROUNDS] = {0}, runs_after[ROUNDS] = {0};
	int64_t merged_before[ROUNDS] = {0}, merged_after[ROUNDS] = {0};
	int ready[2], go[ROUNDS][2], go_read[ROUNDS], next[ROUNDS][2], next_read[ROUNDS];
	unsigned reached = 0;
	pid_t pids[2];

	(void)state;
	memset(reports, 0, sizeof(*reports) * 2);
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	ASSERT_OK(pipe2(ready, O_CLOEXEC));
	for (unsigned r = 0; r < ROUNDS; r++) {
		ASSERT_OK(pipe2(go[r], O_CLOEXEC));
		ASSERT_OK(pipe2(next[r], O_CLOEXEC));
		go_read[r] = go[r][0];
		next_read[r] = next[r][0];
	}
	for (unsigned i = 0; i < 2; i++) {
		pids[i] = test_fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(ready[0]);
			for (unsigned r = 0; r < ROUNDS; r++) {
				close(go[r][1]);
				close(next[r][1]);
			}
			child_run(i, ready[1], go_read, next_read);
		}
	}
	close(ready[1]);
	for (unsigned r = 0; r < ROUNDS; r++) {
		close(go[r][0]);
		close(next[r][0]);
	}
	for (unsigned r = 0; r < ROUNDS; r++) {
		if (!both_reached(ready[0]))
			break;
		runs_before[r] = status_int("totals.engine_runs");
		merged_before[r] = status_int("totals.merged_batches");
		close(go[r][1]); /* go: both read EOF at once */
		go[r][1] = -1;
		if (!both_reached(ready[0]))
			break;
		runs_after[r] = status_int("totals.engine_runs");
		merged_after[r] = status_int("totals.merged_batches");
		close(next[r][1]); /* the next round's alone runs may start */
		next[r][1] = -1;
		reached++;
	}
	for (unsigned r = 0; r < ROUNDS; r++) {
		if (go[r][1] >= 0)
			close(go[r][1]);
		if (next[r][1] >= 0)
			close(next[r][1]);
	}
	close(ready[0]);
	ASSERT_OK(test_children_wait(pids, 2, CHILD_TIMEOUT_MS));
	ASSERT_EQ(reached, ROUNDS);
	for (unsigned i = 0; i < 2; i++)
		ASSERT_EQ(reports[i].finished, 1);

	for (unsigned r = 0; r < ROUNDS; r++) {
		fprintf(stderr,
		        "test: round %u: X %d, Y %d (flags %#x); engine runs +%lld, "
		        "merged batches +%lld\n",
		        r, reports[X].pair[r].status, reports[Y].pair[r].status,
		        reports[Y].pair[r].flags, (long long)(runs_after[r] - runs_before[r]),
		        (long long)(merged_after[r] - merged_before[r]));
		ASSERT_EQ(runs_after[r] - runs_before[r], 1);
	}
	ASSERT_EQ(merged_after[2] - merged_before[2], 2);
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static int group_setup(void **state)
{
	(void)state;
	reports = mmap(NULL, sizeof(*reports) * 2, PROT_READ | PROT_WRITE,
	               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (reports == MAP_FAILED)
		return -1;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	munmap(reports, sizeof(*reports) * 2);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_merge_precheck),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
