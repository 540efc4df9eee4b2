/* SPDX-License-Identifier: MIT */
/*
 * Clients that die at the worst moments, on one real moed (the default model).
 *
 *   - killed right after submitting a big batch (T = 4096): it raises
 *     SIGKILL itself after moe_submit(), so moed finds the batch queued, or
 *     runs it, for a client that is gone;
 *   - killed with eight big batches queued (more than moed can run before it
 *     notices the death);
 *   - killed while it sleeps in moe_wait() on big batches (the test waits
 *     until the process is in state S, then SIGKILLs it; never reaching S
 *     within 10 s fails the test; so do three clients in a row that had
 *     reaped all their batches when they died: they slept with nothing in
 *     flight);
 *   - killed with its rings full: sq 8 / cq 8, 16 requests submitted and
 *     none reaped, so moed has raised MOE_RING_PRODUCER_WAITING for it.
 *
 * moed must survive all of it: within a few seconds its status shows only
 * the survivor (a libmoe client of the test process, connected before any of
 * them), whose forwards, and those of a client connected afterwards, are
 * still correct against the embedded engine; and moed exits 0 on SIGTERM.
 *
 * usage: it_client_death MOED [MOECTL]
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"
#include "test_fds.h"

#define BIG_T           4096
#define ATOL            1e-4
#define RTOL            1e-4
#define TIE_MARGIN      1e-3
#define GONE_TIMEOUT_MS 10000

#define WAIT_BATCHES  8 /* what the client killed in moe_wait waits for */
#define WAIT_ATTEMPTS 3

static const char *arg_moed;
static struct test_daemon daemon_;
/* Completions the client killed in moe_wait has reaped so far; MAP_SHARED. */
static unsigned *wait_reaped;

static struct moe_client *client_connect(const char *name, uint32_t sq, uint32_t cq)
{
	struct moe_client_opts o;
	struct moe_client *c = NULL;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = name;
	o.arena_size = 96ull << 20; /* eight batches of 4096 tokens, in and out */
	if (sq) {
		o.sq_entries = sq;
		o.cq_entries = cq;
	}
	CHILD_OK(moe_connect(&o, &c));
	return c;
}

static uint32_t client_d_model(struct moe_client *c)
{
	struct moe_model_info mi = {.size = sizeof(mi)};

	CHILD_OK(moe_model_info_get(c, &mi));
	return mi.d_model;
}

/* Submit @n batches of @T tokens (layer 0, 1, 0 ...) from fresh buffers; never reaped here. */
static void submit_big(struct moe_client *c, unsigned n, uint32_t T)
{
	const uint32_t d = client_d_model(c);
	uint64_t seed = 0xdead;

	for (unsigned i = 0; i < n; i++) {
		struct moe_request rq;
		float *x, *y;

		CHILD_OK(moe_buf_alloc(c, (size_t)T * d * 4, (void **)&x));
		CHILD_OK(moe_buf_alloc(c, (size_t)T * d * 4, (void **)&y));
		test_fill_normal(x, (size_t)T * d, &seed);
		moe_request_init(&rq);
		rq.user_data = i;
		rq.layer = i % 2;
		rq.n_tokens = T;
		rq.input = x;
		rq.output = y;
		CHILD_OK(moe_submit(c, &rq));
	}
}

/* The ways to die; each never returns. */
static void __attribute__((noreturn)) die_after_submit(unsigned n_batches)
{
	struct moe_client *c = client_connect("it-dies-after-submit", 0, 0);

	submit_big(c, n_batches, BIG_T);
	raise(SIGKILL);
	_exit(3); /* not reached */
}

static void __attribute__((noreturn)) die_in_wait(int waiting_fd)
{
	struct moe_client *c = client_connect("it-dies-in-wait", 0, 0);
	struct moe_completion done[WAIT_BATCHES];
	char byte = 1;

	submit_big(c, WAIT_BATCHES, BIG_T);
	CHILD_CHECK(write(waiting_fd, &byte, 1) == 1, "pipe: %m");
	for (;;) { /* until killed; completions may come before the kill */
		int r = moe_wait(c, done, WAIT_BATCHES, -1);

		CHILD_CHECK(r >= 0, "moe_wait failed");
		__atomic_add_fetch(wait_reaped, (unsigned)r, __ATOMIC_RELEASE);
	}
}

static void __attribute__((noreturn)) die_with_full_rings(int waiting_fd)
{
	struct moe_client *c = client_connect("it-dies-full", 8, 8);
	const uint32_t d = client_d_model(c);
	unsigned submitted = 0;
	int64_t last_ok = test_now_ns();
	struct moe_request rq;
	float *x, *y;
	char byte = 1;

	CHILD_OK(moe_buf_alloc(c, (size_t)16 * d * 4, (void **)&x));
	CHILD_OK(moe_buf_alloc(c, (size_t)16 * d * 4, (void **)&y));
	memset(x, 0, (size_t)16 * d * 4);
	moe_request_init(&rq);
	rq.n_tokens = 16;
	rq.input = x;
	rq.output = y;
	/* until moe_submit has said -EAGAIN for a second: both rings full */
	while (test_now_ns() - last_ok < (int64_t)test_scale(1000, 3000) * 1000000) {
		int r = moe_submit(c, &rq);

		CHILD_CHECK(r == 0 || r == -EAGAIN, "moe_submit: %d", r);
		if (r == 0) {
			submitted++;
			last_ok = test_now_ns();
		} else {
			usleep(2000);
		}
	}
	CHILD_CHECK(submitted == 16, "%u submitted before the rings were full, expected 16",
	            submitted);
	CHILD_CHECK(write(waiting_fd, &byte, 1) == 1, "pipe: %m");
	for (;;)
		pause();
}

/* Wait for the child's "ready to die" byte on @fd. */
static void wait_byte(int fd)
{
	char byte;

	ASSERT_EQ(read(fd, &byte, 1), 1);
}

static void expect_killed(pid_t pid)
{
	char buf[64];
	int status;

	ASSERT_OK(test_child_wait(pid, 60000, &status));
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail_msg("the dying client ended with %s, not SIGKILL (did it fail first?)",
		         test_wait_status_str(status, buf, sizeof(buf)));
}

/*
 * Wait until child @pid sleeps (/proc state 'S': blocked in moe_wait, its
 * only blocking call after it wrote its byte), polling every millisecond;
 * fail, after SIGKILLing and reaping it, if that is not seen within
 * @timeout_ms (or the child exits first).
 */
static void expect_asleep(pid_t pid, unsigned timeout_ms)
{
	int64_t t0 = test_now_ns();
	char state = test_proc_state(pid);
	int status;

	while (state != 'S' && test_now_ns() - t0 < (int64_t)timeout_ms * 1000000) {
		if (state == 'Z' || state == '?')
			break;
		test_sleep_ms(1);
		state = test_proc_state(pid);
	}
	if (state == 'S')
		return;
	kill(pid, SIGKILL);
	test_child_wait(pid, 60000, &status);
	fail_msg("the client in moe_wait never slept within %u ms (last /proc state '%c')",
	         timeout_ms, state);
}

/* A forward of @T tokens by @c, checked against @ref. */
static void forward_checked(struct moe_client *c, struct test_ref *ref, uint32_t layer, uint32_t T,
                            uint64_t seed)
{
	const uint32_t d = ref->d_model;
	struct moe_request rq;
	struct moe_completion done;
	float *x, *y;

	ASSERT_OK(moe_buf_alloc(c, (size_t)T * d * 4, (void **)&x));
	ASSERT_OK(moe_buf_alloc(c, (size_t)T * d * 4, (void **)&y));
	test_fill_normal(x, (size_t)T * d, &seed);
	memset(y, 0xff, (size_t)T * d * 4);
	moe_request_init(&rq);
	rq.user_data = seed;
	rq.layer = layer;
	rq.n_tokens = T;
	rq.input = x;
	rq.output = y;
	ASSERT_OK(moe_forward(c, &rq, &done));
	ASSERT_EQ(done.status, 0);
	ASSERT_EQ(done.user_data, rq.user_data);
	ASSERT_EQ(test_ref_check(ref, layer, x, T, y, ATOL, RTOL, TIE_MARGIN, "survivor output"),
	          0);
	moe_buf_free(c, x);
	moe_buf_free(c, y);
}

/*
 * A client killed asleep in moe_wait with batches outstanding: it slept (state
 * S) before the kill and had not reaped every batch even when it died, so it
 * slept with batches outstanding, not in a wait for nothing after they all
 * came back. An attempt in which the batches all came back first proves
 * nothing and is made again (counted in *@retries); WAIT_ATTEMPTS such
 * attempts fail the test.
 */
static void killed_in_wait(const int pipefd[2], unsigned round, unsigned *retries)
{
	for (unsigned attempt = 0; attempt < WAIT_ATTEMPTS; attempt++) {
		unsigned reaped;
		pid_t pid;

		*wait_reaped = 0;
		pid = test_fork();
		assert_true(pid >= 0);
		if (pid == 0)
			die_in_wait(pipefd[1]);
		wait_byte(pipefd[0]);
		expect_asleep(pid, test_scale(10000, 30000));
		kill(pid, SIGKILL);
		expect_killed(pid);
		reaped = __atomic_load_n(wait_reaped, __ATOMIC_ACQUIRE);
		fprintf(stderr,
		        "test: round %u: killed asleep in moe_wait with %u of %u batches "
		        "reaped\n",
		        round, reaped, WAIT_BATCHES);
		if (reaped < WAIT_BATCHES)
			return;
		if (attempt + 1 < WAIT_ATTEMPTS)
			(*retries)++;
	}
	fail_msg("%u clients killed in moe_wait had each reaped all %u batches first: none "
	         "slept with batches in flight",
	         WAIT_ATTEMPTS, WAIT_BATCHES);
}

static void test_client_death(void **state)
{
	const unsigned rounds = test_scale(3, 1);
	unsigned retries = 0;
	struct moe_client_opts o;
	struct moe_client *survivor, *late;
	struct test_ref ref;
	int pipefd[2];
	pid_t pid;
	json_t *st;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "it-survivor";
	ASSERT_OK(moe_connect(&o, &survivor));
	ASSERT_OK(pipe2(pipefd, O_CLOEXEC));

	for (unsigned round = 0; round < rounds; round++) {
		/* killed right after one big submit, then with eight queued */
		pid = test_fork();
		assert_true(pid >= 0);
		if (pid == 0)
			die_after_submit(1);
		expect_killed(pid);

		pid = test_fork();
		assert_true(pid >= 0);
		if (pid == 0)
			die_after_submit(8);
		expect_killed(pid);

		/* killed asleep in moe_wait */
		killed_in_wait(pipefd, round, &retries);

		/* killed with both rings full */
		pid = test_fork();
		assert_true(pid >= 0);
		if (pid == 0)
			die_with_full_rings(pipefd[1]);
		wait_byte(pipefd[0]);
		kill(pid, SIGKILL);
		expect_killed(pid);

		/* the dead are gone from the status, the survivor stays */
		ASSERT_OK(
		    test_status_wait_int(daemon_.socket, "totals.clients", 1, GONE_TIMEOUT_MS));
		assert_true(test_daemon_alive(&daemon_));
	}
	close(pipefd[0]);
	close(pipefd[1]);

	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "totals.clients_served"), 1 + 4 * rounds + retries);
	ASSERT_EQ(test_json_int(st, "totals.clients_corrupt"), 0);
	ASSERT_EQ(test_json_int(st, "totals.errors"), 0);
	assert_non_null(test_status_client(st, "it-survivor"));
	json_decref(st);

	/* no more forks: the reference engine's threads may start now */
	ASSERT_OK(test_ref_open(&ref, daemon_.model_path));
	forward_checked(survivor, &ref, 0, 64, 1);
	forward_checked(survivor, &ref, 1, BIG_T, 2);
	o.name = "it-late";
	ASSERT_OK(moe_connect(&o, &late));
	forward_checked(late, &ref, 1, 100, 3);
	moe_close(late);
	moe_close(survivor);
	test_ref_close(&ref);

	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, GONE_TIMEOUT_MS));
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static int test_setup(void **state)
{
	return fd_check_setup(state);
}

static int test_teardown(void **state)
{
	if (daemon_.pid > 0)
		test_daemon_kill(&daemon_, SIGKILL);
	return fd_check_teardown(state);
}

static int group_setup(void **state)
{
	(void)state;
	wait_reaped = mmap(NULL, sizeof(*wait_reaped), PROT_READ | PROT_WRITE,
	                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (wait_reaped == MAP_FAILED)
		return -1;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	munmap(wait_reaped, sizeof(*wait_reaped));
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_client_death, test_setup, test_teardown),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
