/* SPDX-License-Identifier: MIT */
/*
 * A client outlives its daemon (moe.h: "The daemon going away (crash,
 * restart) turns every call that needs it into -ECONNRESET, within a
 * bounded time even while waiting ... moe_reconnect() attaches to a new
 * daemon and keeps the arena's addresses valid").
 *
 * A libmoe client of the test process connects and runs a forward (checked
 * against the embedded engine). Then moed goes away:
 *
 *   - test_sigterm_restart: SIGTERM, moed must drain and exit 0. A request
 *     submitted afterwards waits in moe_wait(timeout -1): it must return
 *     -ECONNRESET within 5 s, not hang; then moe_forward, moe_reap and
 *     moe_submit say -ECONNRESET at once.
 *   - test_crash_restart: SIGKILL with a 4096-token batch in flight: the
 *     same from the wait on that batch; the socket file stays behind.
 *
 *   - test_sigterm_drains: batches moed took from the ring but had not run
 *     (waiting for merge partners) when SIGTERM came still complete, with
 *     correct results, before the client sees -ECONNRESET; moed's log says
 *     that the signal found all of them queued.
 *
 * moe_reconnect() with no daemon fails (-ENOENT / -ECONNREFUSED) and may be
 * tried again. A new moed starts on the same socket and state_dir;
 * moe_reconnect() succeeds; the buffers keep their addresses, and once the
 * input is rewritten (their contents are lost) a forward gives the right
 * result again. Both daemons' SIGTERM exits are 0, and the process ends
 * with as many fds as it started with.
 *
 *   - test_socket_path_holds_a_file: a regular file at the socket path is
 *     not a stale socket: moed must refuse to start (exit non-zero) and
 *     leave the file as it was (only a socket is ever removed there).
 *
 * usage: it_daemon_restart MOED [MOECTL]
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"
#include "test_fds.h"

#define T_MAX          4096
#define ATOL           1e-4
#define RTOL           1e-4
#define TIE_MARGIN     1e-3
#define RESET_BOUND_NS (5ll * 1000000000) /* "a bounded time": the test's bound */

static const char *arg_moed;
static struct test_daemon daemon_;

struct client {
	struct moe_client *c;
	struct moe_model_info mi;
	float *x, *y; /* [T_MAX][d] each, in the arena */
	float *ry;    /* reference, private */
	struct test_ref ref;
};

static void client_open(struct client *cl)
{
	struct moe_client_opts o;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "it-restart";
	o.arena_size = 16ull << 20;
	ASSERT_OK(moe_connect(&o, &cl->c));
	cl->mi.size = sizeof(cl->mi);
	ASSERT_OK(moe_model_info_get(cl->c, &cl->mi));
	ASSERT_OK(moe_buf_alloc(cl->c, (size_t)T_MAX * cl->mi.d_model * 4, (void **)&cl->x));
	ASSERT_OK(moe_buf_alloc(cl->c, (size_t)T_MAX * cl->mi.d_model * 4, (void **)&cl->y));
	cl->ry = malloc((size_t)T_MAX * cl->mi.d_model * 4);
	assert_non_null(cl->ry);
	ASSERT_OK(test_ref_open(&cl->ref, daemon_.model_path));
}

static void client_close(struct client *cl)
{
	moe_buf_free(cl->c, cl->x);
	moe_buf_free(cl->c, cl->y);
	moe_close(cl->c);
	free(cl->ry);
	test_ref_close(&cl->ref);
}

static void request_fill(struct client *cl, struct moe_request *rq, uint32_t layer, uint32_t T,
                         uint64_t seed)
{
	test_fill_normal(cl->x, (size_t)T * cl->mi.d_model, &seed);
	memset(cl->y, 0xff, (size_t)T * cl->mi.d_model * 4);
	moe_request_init(rq);
	rq->user_data = seed;
	rq->layer = layer;
	rq->n_tokens = T;
	rq->input = cl->x;
	rq->output = cl->y;
}

/* A forward of fresh input, checked against the reference engine. */
static void forward_checked(struct client *cl, uint32_t layer, uint32_t T, uint64_t seed)
{
	const uint32_t d = cl->mi.d_model;
	struct moe_request rq;
	struct moe_completion done;
	size_t bad = 0;

	request_fill(cl, &rq, layer, T, seed);
	ASSERT_OK(moe_forward(cl->c, &rq, &done));
	ASSERT_EQ(done.user_data, rq.user_data);
	ASSERT_EQ(done.status, 0);
	ASSERT_OK(
	    test_ref_forward(&cl->ref, layer, cl->x, T, NULL, NULL, 0, cl->ry, NULL, NULL, NULL));
	for (uint32_t t = 0; t < T; t++)
		if (test_ref_route_margin(&cl->ref, layer, cl->x + (size_t)t * d) >= TIE_MARGIN)
			bad += test_count_mismatches("output", cl->y + (size_t)t * d,
			                             cl->ry + (size_t)t * d, d, ATOL, RTOL);
	ASSERT_EQ(bad, 0);
}

static void on_watchdog(int sig)
{
	static const char msg[] = "FAILED: moe_wait(timeout -1) still waits 30 s after moed "
	                          "went away: it hangs instead of returning -ECONNRESET\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* moe_wait() on a request whose daemon is gone: -ECONNRESET, and soon. */
static void wait_expect_reset(struct client *cl, const char *what)
{
	struct moe_completion done;
	int64_t t0 = test_now_ns(), took;
	int r;

	/* no limit on the wait itself: a watchdog turns a hang into a clear failure */
	signal(SIGALRM, on_watchdog);
	alarm(30);
	r = moe_wait(cl->c, &done, 1, -1);
	alarm(0);
	signal(SIGALRM, SIG_DFL);
	took = test_now_ns() - t0;
	fprintf(stderr, "test: %s: moe_wait returned %d (%s) after %.1f ms\n", what, r,
	        moe_strerror(r), (double)took / 1e6);
	ASSERT_ERRNO(r, ECONNRESET);
	if (took >= RESET_BOUND_NS)
		fail_msg("%s: moe_wait took %.1f s to report -ECONNRESET", what,
		         (double)took / 1e9);
}

/* After the reset every call that needs moed says so at once. */
static void calls_expect_reset(struct client *cl)
{
	struct moe_request rq;
	struct moe_completion done;

	request_fill(cl, &rq, 0, 8, 99);
	ASSERT_ERRNO(moe_forward(cl->c, &rq, &done), ECONNRESET);
	ASSERT_ERRNO(moe_submit(cl->c, &rq), ECONNRESET);
	ASSERT_ERRNO(moe_reap(cl->c, &done, 1), ECONNRESET);
	ASSERT_ERRNO(moe_wait(cl->c, &done, 1, 0), ECONNRESET);
}

/* No daemon: reconnect fails, and the client stays reconnectable. */
static void reconnect_without_daemon(struct client *cl)
{
	int r = moe_reconnect(cl->c);

	if (r != -ENOENT && r != -ECONNREFUSED)
		fail_msg("moe_reconnect with no daemon: %d (%s), expected -ENOENT or "
		         "-ECONNREFUSED",
		         r, moe_strerror(r));
	r = moe_reconnect(cl->c);
	assert_true(r == -ENOENT || r == -ECONNREFUSED);
}

/* The second daemon: reconnect, same addresses, rewrite the input, right results. */
static void restart_and_reconnect(struct client *cl)
{
	struct moe_model_info mi = {.size = sizeof(mi)};
	float *x0 = cl->x, *y0 = cl->y;
	json_t *st;

	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	ASSERT_OK(moe_reconnect(cl->c));
	ASSERT_OK(moe_model_info_get(cl->c, &mi));
	ASSERT_EQ(mi.d_model, cl->mi.d_model);
	ASSERT_EQ(mi.arena_size, cl->mi.arena_size);
	/* the buffers keep their addresses: the same pointers are valid requests */
	assert_ptr_equal(cl->x, x0);
	assert_ptr_equal(cl->y, y0);
	forward_checked(cl, 1, 33, 7);
	forward_checked(cl, 0, T_MAX, 8);
	forward_checked(cl, 1, 1, 9);

	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "totals.clients"), 1);
	ASSERT_EQ(test_json_int(st, "totals.batches"), 3);
	ASSERT_EQ(test_json_int(st, "totals.errors"), 0);
	json_decref(st);
}

static void test_sigterm_restart(void **state)
{
	static struct client cl;
	struct moe_request rq;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	client_open(&cl);
	forward_checked(&cl, 0, 17, 1);

	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	/* the client cannot know yet: the submit lands in the old ring */
	request_fill(&cl, &rq, 1, 8, 2);
	ASSERT_OK(moe_submit(cl.c, &rq));
	wait_expect_reset(&cl, "after SIGTERM");
	calls_expect_reset(&cl);
	reconnect_without_daemon(&cl);

	restart_and_reconnect(&cl);
	client_close(&cl);
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static void test_crash_restart(void **state)
{
	static struct client cl;
	struct moe_request rq;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	client_open(&cl);
	forward_checked(&cl, 1, 5, 1);

	/* a big batch in flight, then the daemon crashes */
	request_fill(&cl, &rq, 0, T_MAX, 2);
	ASSERT_OK(moe_submit(cl.c, &rq));
	ASSERT_EQ(test_daemon_kill(&daemon_, SIGKILL), 128 + SIGKILL);
	wait_expect_reset(&cl, "after SIGKILL");
	calls_expect_reset(&cl);
	reconnect_without_daemon(&cl);

	/* the new moed replaces the stale socket file */
	restart_and_reconnect(&cl);
	client_close(&cl);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

/*
 * Wait for the @n batches x[i] -> y[i] (16 tokens, layer 0, user_data i) of
 * @cl and check each against the reference; @what names the path that ran them.
 */
static void batches_expect_done(struct client *cl, float **x, float **y, unsigned n,
                                const char *what)
{
	struct moe_completion done[8];
	unsigned got = 0;

	while (got < n) {
		int r = moe_wait(cl->c, done, 8, 10ll * 1000000000);

		if (r < 0)
			fail_msg("moe_wait %s: %s, with %u of %u completions", what,
			         moe_strerror(r), got, n);
		for (int i = 0; i < r; i++) {
			uint64_t k = done[i].user_data;
			size_t bad = 0;

			assert_true(k < n);
			ASSERT_EQ(done[i].status, 0);
			ASSERT_OK(test_ref_forward(&cl->ref, 0, x[k], 16, NULL, NULL, 0, cl->ry,
			                           NULL, NULL, NULL));
			for (uint32_t t = 0; t < 16; t++)
				if (test_ref_route_margin(&cl->ref, 0,
				                          x[k] + (size_t)t * cl->mi.d_model) >=
				    TIE_MARGIN)
					bad += test_count_mismatches(
					    what, y[k] + (size_t)t * cl->mi.d_model,
					    cl->ry + (size_t)t * cl->mi.d_model, cl->mi.d_model,
					    ATOL, RTOL);
			ASSERT_EQ(bad, 0);
		}
		got += (unsigned)r;
	}
}

/*
 * Submit the @n batches and wait until status shows all of them queued in
 * moed (taken from the ring, waiting for merge partners) with none
 * completed. True when that was seen less than @budget_ns after the
 * submission began: each batch's merge window (1 s) started after that, so
 * a signal sent now provably finds all of them still queued.
 */
static bool batches_submit_queued(struct client *cl, float **x, float **y, unsigned n,
                                  uint64_t seed0, int64_t budget_ns)
{
	struct moe_completion done[8];
	struct moe_request rq;
	int64_t t_submit = test_now_ns();

	for (unsigned i = 0; i < n; i++) {
		uint64_t seed = seed0 + i;

		test_fill_normal(x[i], (size_t)16 * cl->mi.d_model, &seed);
		memset(y[i], 0xff, (size_t)16 * cl->mi.d_model * 4);
		moe_request_init(&rq);
		rq.user_data = i;
		rq.layer = 0;
		rq.n_tokens = 16;
		rq.input = x[i];
		rq.output = y[i];
		ASSERT_OK(moe_submit(cl->c, &rq));
	}
	while (test_now_ns() - t_submit < budget_ns) {
		json_t *st = test_status_get(daemon_.socket);
		int64_t queued;

		assert_non_null(st);
		queued = json_integer_value(
		    json_object_get(test_status_client(st, "it-restart"), "queued"));
		json_decref(st);
		/* the time check again: the status round trip took some of it */
		if (queued == n && moe_reap(cl->c, done, 8) == 0 &&
		    test_now_ns() - t_submit < budget_ns)
			return true;
		test_sleep_ms(5);
	}
	return false;
}

/* Copy moed's log file to stderr (ctest shows it when the test fails). */
static void drain_log_print(void)
{
	char line[4096];
	FILE *f = fopen(daemon_.log_path, "re");

	if (!f)
		return;
	fprintf(stderr, "test: moed's log (%s):\n", daemon_.log_path);
	while (fgets(line, sizeof(line), f))
		fprintf(stderr, "  %s", line);
	fclose(f);
}

/*
 * SIGTERM drains: batches moed has taken from the ring but not run yet (they
 * wait for merge partners: a second, idle client and a 1 s merge window)
 * still run and complete with correct results before moed exits 0; only
 * then does the client see -ECONNRESET. SIGTERM goes out only once status
 * shows every batch queued, less than 0.8 s after their submission began,
 * so it provably comes while they wait; an attempt that cannot show this in
 * time (a slow machine) lets the window run them, checks them, and tries
 * again; three such attempts fail the test. Then moed's log must say that
 * the signal found all of them queued ("draining 6 queued batches"), so the
 * drain path provably ran.
 */
static void test_sigterm_drains(void **state)
{
	const char *extra[] = {"--set", "merge_window_us=1000000", NULL};
	const unsigned n = 6, attempts = 3;
	static struct client cl;
	struct moe_client_opts o;
	struct moe_client *idle;
	float *x[6], *y[6];
	char drain_line[64];
	unsigned attempt;

	(void)state;
	ASSERT_OK(test_daemon_log_to_file(&daemon_, "drain.log"));
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	client_open(&cl);
	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "it-idle";
	ASSERT_OK(moe_connect(&o, &idle));
	for (unsigned i = 0; i < n; i++) {
		ASSERT_OK(moe_buf_alloc(cl.c, (size_t)16 * cl.mi.d_model * 4, (void **)&x[i]));
		ASSERT_OK(moe_buf_alloc(cl.c, (size_t)16 * cl.mi.d_model * 4, (void **)&y[i]));
	}

	for (attempt = 0; attempt < attempts; attempt++) {
		if (batches_submit_queued(&cl, x, y, n, 100 + 10 * attempt, 800ll * 1000000))
			break;
		fprintf(stderr,
		        "test: attempt %u: the batches were not all seen queued within "
		        "0.8 s; letting the merge window run them, then again\n",
		        attempt + 1);
		batches_expect_done(&cl, x, y, n, "output run by the merge window");
	}
	if (attempt == attempts)
		fail_msg("%u attempts never saw %u batches queued in moed within 0.8 s of their "
		         "submission: the drain path could not be exercised",
		         attempts, n);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	/* moed's own word that the signal found the batches queued: the drain path ran */
	snprintf(drain_line, sizeof(drain_line), "draining %u queued batches", n);
	if (test_daemon_log_count(&daemon_, drain_line) != 1) {
		drain_log_print();
		fail_msg("moed's log has no \"%s\" line: SIGTERM did not find the batches "
		         "queued",
		         drain_line);
	}
	daemon_.log_path[0] = '\0'; /* later starts log to stderr again */
	batches_expect_done(&cl, x, y, n, "drained output");
	wait_expect_reset(&cl, "after the drain");
	for (unsigned i = 0; i < n; i++) {
		moe_buf_free(cl.c, x[i]);
		moe_buf_free(cl.c, y[i]);
	}
	moe_close(idle);
	client_close(&cl);
}

static void test_socket_path_holds_a_file(void **state)
{
	static const char content[] = "an operator's file, not a socket\n";
	char state_set[sizeof(daemon_.state_dir) + 16], got[sizeof(content)], buf[64];
	int fd, status;
	pid_t pid;

	(void)state;
	fd = open(daemon_.socket, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	ASSERT_EQ(write(fd, content, sizeof(content) - 1), (ssize_t)sizeof(content) - 1);
	close(fd);

	snprintf(state_set, sizeof(state_set), "state_dir=%s", daemon_.state_dir);
	pid = test_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl(arg_moed, arg_moed, "--foreground", "--socket", daemon_.socket, "--set",
		      state_set, "--set", "store_keep=no", (char *)NULL);
		_exit(127);
	}
	ASSERT_OK(test_child_wait(pid, TEST_DAEMON_START_TIMEOUT_MS, &status));
	fprintf(stderr, "test: moed with a file at its socket path: %s\n",
		test_wait_status_str(status, buf, sizeof(buf)));
	assert_true(WIFEXITED(status));
	assert_true(WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 127);

	fd = open(daemon_.socket, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	ASSERT_EQ(read(fd, got, sizeof(got)), (ssize_t)sizeof(content) - 1);
	close(fd);
	assert_memory_equal(got, content, sizeof(content) - 1);
	ASSERT_OK(unlink(daemon_.socket));
}

static int test_setup(void **state)
{
	return fd_check_setup(state);
}

static int test_teardown(void **state)
{
	if (daemon_.pid > 0)
		test_daemon_kill(&daemon_, SIGKILL);
	daemon_.log_path[0] = '\0'; /* a failed test_sigterm_drains left it set */
	return fd_check_teardown(state);
}

static int group_setup(void **state)
{
	(void)state;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_sigterm_restart, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_crash_restart, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_sigterm_drains, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_socket_path_holds_a_file, test_setup,
					    test_teardown),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
