/* SPDX-License-Identifier: MIT */
/*
 * A client's statistics do not depend on its neighbours: the aux loss,
 * z-loss and dropped slots in a completion are those of the client's own
 * tokens, whether its batch ran alone or merged with another client's.
 *
 * moed runs the embedded default model with a merge window of 200 ms (long
 * enough that two batches submitted together always merge; the reactor runs
 * them at once when every client has one queued, so the window costs nothing
 * here). Two client processes, each with its own inputs and batch size, run
 * several rounds, alternating the layers. In each round each client first
 * runs its batch with MOE_REQ_NO_MERGE (alone), then both wait at a pipe
 * barrier and submit the same batches again together: these completions must
 * carry MOE_COMPLETION_MERGED (asserted, not hoped for), and aux_loss, z_loss
 * (bitwise, memcmp), the Z_LOSS flag and n_dropped must equal the alone run's.
 * The parent checks that the two clients' alone statistics differ in every
 * round, so the merged run's shared statistics (the bug this guards against)
 * could not pass, that the daemon counted every merged batch, and that moed
 * exits 0 on SIGTERM.
 *
 * usage: it_merged_stats MOED [MOECTL]
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"

#define N_CLIENTS        2
#define ROUNDS           4
#define CHILD_TIMEOUT_MS 120000

static const uint32_t client_tokens[N_CLIENTS] = { 7, 19 };

static const char *arg_moed;
static struct test_daemon daemon_;

/* What each child saw, in memory shared with the parent. */
struct child_report {
	struct moe_completion alone[ROUNDS];
	struct moe_completion merged[ROUNDS];
	int finished; /* 1 once every check passed */
};

static struct child_report *reports; /* [N_CLIENTS], MAP_SHARED */

static void stats_expect_equal(unsigned index, unsigned round,
			       const struct moe_completion *merged,
			       const struct moe_completion *alone)
{
	CHILD_CHECK(merged->n_dropped == alone->n_dropped &&
			    (merged->flags & MOE_COMPLETION_Z_LOSS) ==
				    (alone->flags & MOE_COMPLETION_Z_LOSS) &&
			    !memcmp(&merged->aux_loss, &alone->aux_loss, sizeof(float)) &&
			    !memcmp(&merged->z_loss, &alone->z_loss, sizeof(float)),
		    "client %u round %u: merged aux %a z %a dropped %u, alone aux %a z %a "
		    "dropped %u",
		    index, round, (double)merged->aux_loss, (double)merged->z_loss,
		    merged->n_dropped, (double)alone->aux_loss, (double)alone->z_loss,
		    alone->n_dropped);
}

/* One client: per round, its batch alone, the barrier, the batch merged. */
static void child_run(unsigned index, int ready_fd, const int *go_fds)
{
	struct child_report *rep = &reports[index];
	const uint32_t T = client_tokens[index];
	struct moe_client_opts o;
	struct moe_model_info mi;
	struct moe_client *c;
	struct moe_request rq;
	float *x, *y;
	char byte = 1;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = index ? "merged-stats-b" : "merged-stats-a";
	o.arena_size = 4ull << 20;
	CHILD_OK(moe_connect(&o, &c));
	mi.size = sizeof(mi);
	CHILD_OK(moe_model_info_get(c, &mi));
	CHILD_OK(moe_buf_alloc(c, (size_t)T * mi.d_model * sizeof(float), (void **)&x));
	CHILD_OK(moe_buf_alloc(c, (size_t)T * mi.d_model * sizeof(float), (void **)&y));

	for (unsigned round = 0; round < ROUNDS; round++) {
		uint64_t seed = 1000 * (index + 1) + round;

		test_fill_normal(x, (size_t)T * mi.d_model, &seed);
		moe_request_init(&rq);
		rq.layer = round % mi.n_layers;
		rq.n_tokens = T;
		rq.input = x;
		rq.output = y;
		rq.user_data = round;
		rq.flags = MOE_REQ_NO_MERGE;
		CHILD_OK(moe_forward(c, &rq, &rep->alone[round]));
		CHILD_CHECK(rep->alone[round].status == 0, "alone: status %d",
			    rep->alone[round].status);
		CHILD_CHECK(!(rep->alone[round].flags & MOE_COMPLETION_MERGED),
			    "a NO_MERGE batch ran merged");

		/* the barrier: both clients submit within microseconds of each other */
		CHILD_CHECK(write(ready_fd, &byte, 1) == 1, "ready: %s", strerror(errno));
		CHILD_CHECK(read(go_fds[round], &byte, 1) == 0, "go: expected EOF");
		rq.flags = 0;
		CHILD_OK(moe_forward(c, &rq, &rep->merged[round]));
		CHILD_CHECK(rep->merged[round].status == 0, "merged: status %d",
			    rep->merged[round].status);
		CHILD_CHECK(rep->merged[round].flags & MOE_COMPLETION_MERGED,
			    "client %u round %u: the batch did not run merged (layer %u)", index,
			    round, rq.layer);
		stats_expect_equal(index, round, &rep->merged[round], &rep->alone[round]);
	}
	moe_buf_free(c, x);
	moe_buf_free(c, y);
	moe_close(c);
	rep->finished = 1;
	_exit(0);
}

static void test_merged_stats_are_per_client(void **state)
{
	const char *extra[] = { "--set", "merge_window_us=200000", NULL };
	int ready[2], go[ROUNDS][2], go_read[ROUNDS];
	pid_t pids[N_CLIENTS];
	json_t *st;
	char byte;

	(void)state;
	memset(reports, 0, sizeof(*reports) * N_CLIENTS);
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	ASSERT_OK(pipe2(ready, O_CLOEXEC));
	for (unsigned r = 0; r < ROUNDS; r++) {
		ASSERT_OK(pipe2(go[r], O_CLOEXEC));
		go_read[r] = go[r][0];
	}
	for (unsigned i = 0; i < N_CLIENTS; i++) {
		pids[i] = test_fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(ready[0]);
			for (unsigned r = 0; r < ROUNDS; r++)
				close(go[r][1]);
			child_run(i, ready[1], go_read);
		}
	}
	close(ready[1]);
	for (unsigned r = 0; r < ROUNDS; r++) {
		close(go[r][0]);
		for (unsigned i = 0; i < N_CLIENTS; i++)
			if (read(ready[0], &byte, 1) != 1)
				break; /* a child died: test_children_wait() says which */
		close(go[r][1]); /* go: both read EOF at once */
	}
	close(ready[0]);
	ASSERT_OK(test_children_wait(pids, N_CLIENTS, CHILD_TIMEOUT_MS));

	for (unsigned i = 0; i < N_CLIENTS; i++)
		assert_int_equal(reports[i].finished, 1);
	/* different tokens, different statistics: one shared value could not pass */
	for (unsigned r = 0; r < ROUNDS; r++) {
		const struct moe_completion *a = &reports[0].alone[r], *b = &reports[1].alone[r];

		fprintf(stderr, "test: round %u: aux %g / %g, z %g / %g\n", r, (double)a->aux_loss,
			(double)b->aux_loss, (double)a->z_loss, (double)b->z_loss);
		assert_true(a->aux_loss != b->aux_loss);
		if (a->flags & MOE_COMPLETION_Z_LOSS)
			assert_true(a->z_loss != b->z_loss);
	}

	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "totals.batches"), 2 * N_CLIENTS * ROUNDS);
	ASSERT_EQ(test_json_int(st, "totals.merged_batches"), N_CLIENTS * ROUNDS);
	ASSERT_EQ(test_json_int(st, "totals.errors"), 0);
	json_decref(st);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static int group_setup(void **state)
{
	(void)state;
	reports = mmap(NULL, sizeof(*reports) * N_CLIENTS, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (reports == MAP_FAILED)
		return -1;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	munmap(reports, sizeof(*reports) * N_CLIENTS);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_merged_stats_are_per_client),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
