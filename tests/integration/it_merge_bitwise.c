/* SPDX-License-Identifier: MIT */
/*
 * Merging, required and compared bitwise: two clients whose batches
 * certainly merge get the bits of their batches run alone, and a merged
 * engine call that fails because of one client's rows is retried member by
 * member, so that only that client's batch fails.
 *
 * Both tests run two client processes, X and Y, against a moed with a merge
 * window of 200 ms (long enough that two batches submitted together always
 * merge; the reactor starts the run at once when both are queued). In each
 * round each client first runs its batch alone (MOE_REQ_NO_MERGE) and keeps
 * the output; then both wait at a pipe barrier, the test reads
 * totals.engine_runs and merged_batches, lets both submit the same batches
 * again together, and reads the counters once both have completed (and
 * before either goes on to the next round's alone run).
 *
 * test_merged_outputs_bitwise (the embedded default model, four rounds over
 * both layers): X's tokens are routed only to even experts, Y's only to odd
 * ones (chosen with the embedded engine in the child, and confirmed by the
 * daemon's own expert counts of the alone run). With no expert shared, each
 * expert's GEMM gets exactly the rows it gets alone, the gate is one sgemv
 * per token and the combine is per token, so the merged run must give each
 * client its alone output bitwise (memcmp), and its statistics too; every
 * pair completes flagged MERGED, in exactly one engine run, counted as two
 * merged batches. (Batches that share an expert give that expert more rows,
 * and OpenBLAS's sgemm, the small-m kernel and sgemv round differently:
 * such merged outputs are only close to the alone ones, which
 * it_merge_precheck and it_many_clients check within 1e-4.)
 *
 * test_merged_run_retry (a generated default-shaped model with the router
 * setting nonfinite=sanitize): X's rows pass the per-member check
 * (engine_check_input) but overflow inside the experts, so the merged engine
 * call itself fails and the runner repeats it member by member
 * (sched/run.c: run_execute). Round 1: one of X's tokens is +inf in every
 * column (sanitised to FLT_MAX); round 2: finite 1.5e19 (below the 2^64
 * input bound). X's paired batch fails with the status its alone run gets
 * (< 0); Y completes with 0, not flagged MERGED (its retry ran alone), and
 * its output equals its alone output bitwise. Each pair costs exactly three
 * engine runs (the failed merged call, then X and Y alone) and no merged
 * batch: without the retry Y would fail with X, and with a per-member check
 * catching X first it would cost one run.
 *
 * Each test ends with moed exiting 0 on SIGTERM.
 *
 * usage: it_merge_bitwise MOED MOECTL
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"

#define MAX_ROUNDS       4
#define CHILD_TIMEOUT_MS 120000
#define X                0
#define Y                1
#define CANDIDATES       64 /* tokens routed per selection step */
#define MAX_EXPERTS      64

static const char *arg_moed, *arg_moectl;
static struct test_daemon daemon_;

struct child_report {
	struct moe_completion alone[MAX_ROUNDS], pair[MAX_ROUNDS];
	int finished;
};
static struct child_report *reports; /* [2], MAP_SHARED */

/* What a test's clients do; the pair protocol around it is shared. */
struct pair_test {
	const char *model; /* the model moed and the child's reference load */
	unsigned rounds;
	const uint32_t *tokens; /* [2] per client */
	/* Fill client @index's batch of round @round into @x ([T][d]). */
	void (*rows_fill)(unsigned index, unsigned round, struct test_ref *ref, uint32_t layer,
	                  float *x, uint32_t T, uint32_t d);
	/* Check the alone run's completion and counts ([max_experts], or NULL). */
	void (*alone_check)(unsigned index, unsigned round, const struct moe_completion *alone,
	                    const int32_t *counts, uint32_t n_experts);
	/* Check the paired run against the alone one; outputs @y and @alone_y. */
	void (*pair_check)(unsigned index, unsigned round, const struct moe_completion *pair,
	                   const struct moe_completion *alone, const float *y, const float *alone_y,
	                   size_t bytes);
};

static const struct pair_test *cur;

/* ------------------------------------------------------------ the clients */

static void child_run(unsigned index, int ready_fd, const int *go_fds, const int *next_fds)
{
	struct child_report *rep = &reports[index];
	const uint32_t T = cur->tokens[index];
	struct moe_client_opts o;
	struct moe_model_info mi;
	struct moe_client *c;
	struct moe_request rq;
	struct test_ref ref;
	float *x, *y, *alone_y;
	int32_t *counts;
	size_t bytes;
	char byte = 1;

	alarm(CHILD_TIMEOUT_MS / 1000);
	signal(SIGPIPE, SIG_IGN); /* a write to a test that gave up fails with a message */
	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = index == X ? "bitwise-x" : "bitwise-y";
	o.arena_size = 4u << 20;
	CHILD_OK(moe_connect(&o, &c));
	mi.size = sizeof(mi);
	CHILD_OK(moe_model_info_get(c, &mi));
	CHILD_CHECK(mi.max_experts <= MAX_EXPERTS, "%u experts", mi.max_experts);
	bytes = (size_t)T * mi.d_model * sizeof(float);
	CHILD_OK(moe_buf_alloc(c, bytes, (void **)&x));
	CHILD_OK(moe_buf_alloc(c, bytes, (void **)&y));
	CHILD_OK(moe_buf_alloc(c, sizeof(int32_t) * mi.max_experts, (void **)&counts));
	alone_y = malloc(bytes);
	CHILD_CHECK(alone_y, "malloc");
	CHILD_OK(test_ref_open(&ref, cur->model));

	for (unsigned round = 0; round < cur->rounds; round++) {
		struct moe_completion *alone = &rep->alone[round], *pair = &rep->pair[round];

		moe_request_init(&rq);
		rq.layer = round % mi.n_layers;
		rq.n_tokens = T;
		rq.input = x;
		rq.output = y;
		rq.user_data = round;
		cur->rows_fill(index, round, &ref, rq.layer, x, T, mi.d_model);

		/* alone, with the daemon's own expert counts (which never merge anyway) */
		rq.flags = MOE_REQ_NO_MERGE | MOE_REQ_COUNTS_RETURN;
		rq.expert_counts = counts;
		memset(counts, 0xff, sizeof(int32_t) * mi.max_experts);
		memset(y, 0xff, bytes);
		CHILD_OK(moe_forward(c, &rq, alone));
		CHILD_CHECK(!(alone->flags & MOE_COMPLETION_MERGED), "a NO_MERGE batch ran merged");
		cur->alone_check(index, round, alone, alone->status == 0 ? counts : NULL,
		                 test_ref_experts(&ref, rq.layer));
		memcpy(alone_y, y, bytes);

		/* the barrier: the test reads the counters, then both submit at once */
		CHILD_CHECK(write(ready_fd, &byte, 1) == 1, "ready: %s", strerror(errno));
		CHILD_CHECK(read(go_fds[round], &byte, 1) == 0, "go: expected EOF");
		rq.flags = 0;
		rq.expert_counts = NULL;
		memset(y, 0xff, bytes);
		CHILD_OK(moe_forward(c, &rq, pair));
		CHILD_CHECK(write(ready_fd, &byte, 1) == 1, "done: %s", strerror(errno));
		/* until the test has read the pair's counters */
		CHILD_CHECK(read(next_fds[round], &byte, 1) == 0, "next: expected EOF");

		cur->pair_check(index, round, pair, alone, y, alone_y, bytes);
	}
	test_ref_close(&ref);
	free(alone_y);
	moe_buf_free(c, counts);
	moe_buf_free(c, x);
	moe_buf_free(c, y);
	moe_close(c);
	rep->finished = 1;
	_exit(0);
}

/* ------------------------------------------------------------ the test's side */

/*
 * Read one byte from each child; false as soon as one has exited (the wait
 * then says which). A child never exits while the test waits here: its last
 * step is to wait for the last round's "next", so an exit is a failed check,
 * and the other child, waiting for "go", would otherwise keep the pipe open
 * until its alarm.
 */
static bool both_reached(int fd, const pid_t *pids)
{
	unsigned got = 0;
	char byte;

	while (got < 2) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int n = poll(&p, 1, 100);

		if (n < 0 && errno != EINTR)
			return false;
		if (n > 0) {
			if (read(fd, &byte, 1) != 1)
				return false;
			got++;
			continue;
		}
		for (unsigned i = 0; i < 2; i++) {
			siginfo_t si = {0};

			/* WNOWAIT: test_children_wait() reaps it and reports how it ended */
			if (waitid(P_PID, (id_t)pids[i], &si, WEXITED | WNOHANG | WNOWAIT) < 0 ||
			    si.si_pid != 0)
				return false;
		}
	}
	return true;
}

/* Start moed with @extra; one that a failed test left running is killed first. */
static void daemon_start(const char *const *extra)
{
	if (test_daemon_alive(&daemon_))
		test_daemon_kill(&daemon_, SIGKILL);
	ASSERT_OK(test_daemon_start(&daemon_, extra));
}

static int64_t status_int(const char *path)
{
	return test_status_int(daemon_.socket, path);
}

/*
 * Run @t's rounds with both clients; per round, the engine runs and merged
 * batches that the pair cost, into @ret_runs and @ret_merged [rounds].
 * moed must already run.
 */
static void pair_rounds_run(const struct pair_test *t, int64_t *ret_runs, int64_t *ret_merged)
{
	int ready[2], go[MAX_ROUNDS][2], go_read[MAX_ROUNDS], next[MAX_ROUNDS][2],
	    next_read[MAX_ROUNDS];
	unsigned reached = 0;
	pid_t pids[2];

	assert_true(t->rounds <= MAX_ROUNDS);
	cur = t;
	memset(reports, 0, sizeof(*reports) * 2);
	ASSERT_OK(pipe2(ready, O_CLOEXEC));
	for (unsigned r = 0; r < t->rounds; r++) {
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
			for (unsigned r = 0; r < t->rounds; r++) {
				close(go[r][1]);
				close(next[r][1]);
			}
			child_run(i, ready[1], go_read, next_read);
		}
	}
	close(ready[1]);
	for (unsigned r = 0; r < t->rounds; r++) {
		close(go[r][0]);
		close(next[r][0]);
	}
	for (unsigned r = 0; r < t->rounds; r++) {
		int64_t runs, merged;

		if (!both_reached(ready[0], pids))
			break;
		runs = status_int("totals.engine_runs");
		merged = status_int("totals.merged_batches");
		close(go[r][1]); /* go: both read EOF at once */
		go[r][1] = -1;
		if (!both_reached(ready[0], pids))
			break;
		ret_runs[r] = status_int("totals.engine_runs") - runs;
		ret_merged[r] = status_int("totals.merged_batches") - merged;
		close(next[r][1]); /* the next round's alone runs may start */
		next[r][1] = -1;
		reached++;
	}
	for (unsigned r = 0; r < t->rounds; r++) {
		if (go[r][1] >= 0)
			close(go[r][1]);
		if (next[r][1] >= 0)
			close(next[r][1]);
	}
	close(ready[0]);
	ASSERT_OK(test_children_wait(pids, 2, CHILD_TIMEOUT_MS));
	ASSERT_EQ(reached, t->rounds);
	for (unsigned i = 0; i < 2; i++)
		ASSERT_EQ(reports[i].finished, 1);
}

/* ------------------------------------------------------------ merged, bitwise */

/*
 * @T tokens that the reference routes only to experts of @index's parity:
 * random candidates, routed CANDIDATES at a time, kept when every slot is.
 */
static void rows_fill_disjoint(unsigned index, unsigned round, struct test_ref *ref, uint32_t layer,
                               float *x, uint32_t T, uint32_t d)
{
	const uint32_t k = test_ref_slots(ref, layer);
	float *cand = malloc(sizeof(float) * CANDIDATES * d);
	float *cy = malloc(sizeof(float) * CANDIDATES * d);
	int32_t *ce = malloc(sizeof(int32_t) * CANDIDATES * k);
	uint64_t seed = 4242 * (index + 1) + round;
	uint32_t kept = 0;

	CHILD_CHECK(cand && cy && ce && k > 0, "malloc, or layer %u has no slots", layer);
	for (unsigned tries = 0; kept < T; tries++) {
		CHILD_CHECK(tries < 100, "client %u: only %u of %u tokens route to its experts",
		            index, kept, T);
		test_fill_normal(cand, (size_t)CANDIDATES * d, &seed);
		CHILD_OK(test_ref_forward(ref, layer, cand, CANDIDATES, NULL, NULL, 0, cy, ce, NULL,
		                          NULL));
		for (uint32_t t = 0; t < CANDIDATES && kept < T; t++) {
			bool mine = true;

			for (uint32_t j = 0; j < k; j++)
				mine &= ce[t * k + j] >= 0 && (uint32_t)ce[t * k + j] % 2 == index;
			if (mine)
				memcpy(x + (size_t)kept++ * d, cand + (size_t)t * d,
				       sizeof(float) * d);
		}
	}
	free(ce);
	free(cy);
	free(cand);
}

static void alone_check_disjoint(unsigned index, unsigned round, const struct moe_completion *alone,
                                 const int32_t *counts, uint32_t n_experts)
{
	CHILD_CHECK(alone->status == 0, "client %u round %u alone: status %d", index, round,
	            alone->status);
	CHILD_CHECK(counts, "no counts");
	/* the daemon's routing, not only the reference's: no expert of the other client */
	for (uint32_t e = 0; e < n_experts; e++)
		CHILD_CHECK(e % 2 == index || counts[e] == 0,
		            "client %u round %u: %d tokens on expert %u, which is the other's",
		            index, round, counts[e], e);
}

static void pair_check_bitwise(unsigned index, unsigned round, const struct moe_completion *pair,
                               const struct moe_completion *alone, const float *y,
                               const float *alone_y, size_t bytes)
{
	size_t i = 0;

	CHILD_CHECK(pair->status == 0, "client %u round %u merged: status %d", index, round,
	            pair->status);
	CHILD_CHECK(pair->flags & MOE_COMPLETION_MERGED,
	            "client %u round %u: the pair did not run merged", index, round);
	while (i < bytes / sizeof(float) && !memcmp(&y[i], &alone_y[i], sizeof(float)))
		i++;
	CHILD_CHECK(i == bytes / sizeof(float),
	            "client %u round %u: merged output differs from the alone output at float %zu: "
	            "%a, alone %a",
	            index, round, i, (double)y[i], (double)alone_y[i]);
	CHILD_CHECK(pair->n_dropped == alone->n_dropped &&
	                !memcmp(&pair->aux_loss, &alone->aux_loss, sizeof(float)) &&
	                !memcmp(&pair->z_loss, &alone->z_loss, sizeof(float)),
	            "client %u round %u: merged statistics differ (aux %a / %a)", index, round,
	            (double)pair->aux_loss, (double)alone->aux_loss);
}

static void test_merged_outputs_bitwise(void **state)
{
	static const uint32_t tokens[2] = {24, 41};
	const char *extra[] = {"--set", "merge_window_us=200000", NULL};
	const struct pair_test t = {
	    .model = daemon_.model_path,
	    .rounds = 4,
	    .tokens = tokens,
	    .rows_fill = rows_fill_disjoint,
	    .alone_check = alone_check_disjoint,
	    .pair_check = pair_check_bitwise,
	};
	int64_t runs[MAX_ROUNDS] = {0}, merged[MAX_ROUNDS] = {0};

	(void)state;
	daemon_start(extra);
	pair_rounds_run(&t, runs, merged);
	for (unsigned r = 0; r < t.rounds; r++) {
		fprintf(stderr, "test: round %u: engine runs +%lld, merged batches +%lld\n", r,
		        (long long)runs[r], (long long)merged[r]);
		ASSERT_EQ(runs[r], 1);
		ASSERT_EQ(merged[r], 2);
	}
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	ASSERT_EQ(status_int("totals.errors"), 0);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

/* ------------------------------------------------------------ a failed merged call */

static char sanitize_model[160];

/* Round 0: one of X's tokens +inf throughout (sanitised to FLT_MAX); round 1: 1.5e19. */
static void rows_fill_overflow(unsigned index, unsigned round, struct test_ref *ref, uint32_t layer,
                               float *x, uint32_t T, uint32_t d)
{
	uint64_t seed = 99 * (index + 1) + round;

	(void)ref;
	(void)layer;
	test_fill_normal(x, (size_t)T * d, &seed);
	if (index != X)
		return;
	for (uint32_t c = 0; c < d; c++)
		x[(size_t)2 * d + c] = round == 0 ? INFINITY : 1.5e19f;
}

static void alone_check_overflow(unsigned index, unsigned round, const struct moe_completion *alone,
                                 const int32_t *counts, uint32_t n_experts)
{
	(void)counts;
	(void)n_experts;
	if (index == X)
		/* it passed the per-member check: it failed inside the engine */
		CHILD_CHECK(alone->status < 0 && alone->status != -EDOM,
		            "X round %u alone: status %d, want an overflow", round, alone->status);
	else
		CHILD_CHECK(alone->status == 0, "Y round %u alone: status %d", round,
		            alone->status);
}

static void pair_check_retry(unsigned index, unsigned round, const struct moe_completion *pair,
                             const struct moe_completion *alone, const float *y,
                             const float *alone_y, size_t bytes)
{
	CHILD_CHECK(pair->status == alone->status, "client %u round %u paired: status %d, alone %d",
	            index, round, pair->status, alone->status);
	if (index == X)
		return;
	CHILD_CHECK(!(pair->flags & MOE_COMPLETION_MERGED),
	            "Y round %u: flagged MERGED, but the merged call failed", round);
	CHILD_CHECK(memcmp(y, alone_y, bytes) == 0,
	            "Y round %u: the retried output differs from the alone one (%a / %a)", round,
	            (double)y[0], (double)alone_y[0]);
}

/* moectl gen-model: the default shape with nonfinite=sanitize. 0 or -ECHILD. */
static int sanitize_model_gen(const char *path)
{
	pid_t pid = test_fork();
	int status;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execl(arg_moectl, arg_moectl, "gen-model", "--output", path, "--nonfinite",
		      "sanitize", (char *)NULL);
		_exit(127);
	}
	if (test_child_wait(pid, 60000, &status) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		return -ECHILD;
	return 0;
}

static void test_merged_run_retry(void **state)
{
	static const uint32_t tokens[2] = {6, 13};
	const char *extra[] = {"--set", "merge_window_us=200000", "--set", NULL, NULL};
	char model_set[200];
	const struct pair_test t = {
	    .model = sanitize_model,
	    .rounds = 2,
	    .tokens = tokens,
	    .rows_fill = rows_fill_overflow,
	    .alone_check = alone_check_overflow,
	    .pair_check = pair_check_retry,
	};
	int64_t runs[MAX_ROUNDS] = {0}, merged[MAX_ROUNDS] = {0};

	(void)state;
	snprintf(sanitize_model, sizeof(sanitize_model), "%s/sanitize.safetensors", daemon_.dir);
	ASSERT_OK(sanitize_model_gen(sanitize_model));
	snprintf(model_set, sizeof(model_set), "model=%s", sanitize_model);
	extra[3] = model_set;
	daemon_start(extra);
	pair_rounds_run(&t, runs, merged);
	for (unsigned r = 0; r < t.rounds; r++) {
		fprintf(stderr,
		        "test: round %u: X %d (%s), Y %d; engine runs +%lld, merged batches "
		        "+%lld\n",
		        r, reports[X].pair[r].status, strerror(-reports[X].pair[r].status),
		        reports[Y].pair[r].status, (long long)runs[r], (long long)merged[r]);
		/* the failed merged call, then X alone, then Y alone */
		ASSERT_EQ(runs[r], 3);
		ASSERT_EQ(merged[r], 0);
	}
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
	    cmocka_unit_test(test_merged_outputs_bitwise),
	    cmocka_unit_test(test_merged_run_retry),
	};

	if (argc < 3) {
		fprintf(stderr, "usage: %s MOED MOECTL\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	arg_moectl = argv[2];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
