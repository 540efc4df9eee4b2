/* SPDX-License-Identifier: MIT */
/*
 * Memory that moed's output writes fault into a client's ring memfd is
 * charged to moed; it must not outlive the client's session. A forked libmoe
 * client finds its ring memfd in /proc/self/fd (moed names it
 * "moe-region-ring"), keeps a dup of it, has moed write about 8 MiB of
 * output into its arena with big batches, then closes its connection but
 * keeps the dup. Once moed notices the hang-up, the memfd's st_blocks
 * (exact, and undisturbed by other processes, unlike /proc/meminfo) must be
 * back to at most its value right after connecting: moed punched the whole
 * ring memfd before closing its own fd. The parent checks the child's
 * verdict, that moed lists no client any more, and that moed exits 0.
 *
 * usage: it_session_memory MOED [MOECTL]
 */
#include "test_assert.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"
#include "test_fds.h"

#define WRITE_BYTES  (8ull << 20) /* output moed writes into the arena */
#define ARENA_BYTES  (32ull << 20)
#define SLACK_BYTES  (64ull << 10)
#define RELEASE_MS   10000 /* moed notices the hang-up well within this */
#define MAX_TOKENS   4096u

static const char *arg_moed;
static struct test_daemon daemon_;

/* A dup of this process's ring memfd, found by its name; -1 when there is none. */
static int ring_memfd_dup(void)
{
	char link[PATH_MAX], path[300];
	struct dirent *de;
	DIR *d = opendir("/proc/self/fd");
	int found = -1;

	if (!d)
		return -1;
	while ((de = readdir(d)) && found < 0) {
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (strncmp(link, "/memfd:moe-region-ring", 22) == 0)
			found = dup(atoi(de->d_name));
	}
	closedir(d);
	return found;
}

static uint64_t fd_bytes(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 ? (uint64_t)st.st_blocks * 512 : UINT64_MAX;
}

/* The child: everything up to the verdict; exits 0 when the pages were freed. */
static void client_child(void)
{
	struct moe_model_info mi = {.size = sizeof(mi)};
	struct moe_client_opts o;
	struct moe_client *c = NULL;
	uint64_t seed = 7, base, during, after = UINT64_MAX, written = 0;
	int64_t deadline;
	float *x;
	int ring;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "it-session-memory";
	o.arena_size = ARENA_BYTES;
	CHILD_OK(moe_connect(&o, &c));
	CHILD_OK(moe_model_info_get(c, &mi));
	ring = ring_memfd_dup();
	CHILD_CHECK(ring >= 0, "no memfd named moe-region-ring in /proc/self/fd");
	base = fd_bytes(ring);

	uint32_t T = mi.max_tokens < MAX_TOKENS ? mi.max_tokens : MAX_TOKENS;
	size_t rows = (size_t)T * mi.d_model * sizeof(float);

	CHILD_OK(moe_buf_alloc(c, rows, (void **)&x));
	test_fill_normal(x, (size_t)T * mi.d_model, &seed);
	/* fresh output buffers each time: every batch faults in new pages on moed's side */
	while (written < WRITE_BYTES) {
		struct moe_completion done;
		struct moe_request rq;
		float *y;

		CHILD_OK(moe_buf_alloc(c, rows, (void **)&y));
		moe_request_init(&rq);
		rq.layer = 0;
		rq.n_tokens = T;
		rq.input = x;
		rq.output = y;
		CHILD_OK(moe_forward(c, &rq, &done));
		CHILD_CHECK(done.status == 0, "forward failed: %d", done.status);
		written += rows;
	}
	during = fd_bytes(ring);
	CHILD_CHECK(during >= base + WRITE_BYTES, "%llu bytes resident after the batches, %llu before",
		    (unsigned long long)during, (unsigned long long)base);

	moe_close(c);
	deadline = test_now_ns() + (int64_t)RELEASE_MS * 1000000;
	while (test_now_ns() < deadline) {
		after = fd_bytes(ring);
		if (after <= base + SLACK_BYTES)
			break;
		test_sleep_ms(10);
	}
	fprintf(stderr, "[child] ring memfd: %llu bytes at connect, %llu after the batches, %llu "
			"after the hang-up\n",
		(unsigned long long)base, (unsigned long long)during, (unsigned long long)after);
	CHILD_CHECK(after <= base + SLACK_BYTES,
		    "moed left %llu bytes of the ring memfd resident after the session ended",
		    (unsigned long long)after);
	close(ring);
	_exit(0);
}

static void test_pages_freed_at_hangup(void **state)
{
	pid_t pid;
	int status;
	char buf[64];

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	pid = test_fork();
	assert_true(pid >= 0);
	if (pid == 0)
		client_child();
	ASSERT_OK(test_child_wait(pid, 120000, &status));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("client: %s", test_wait_status_str(status, buf, sizeof(buf)));
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
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
	    cmocka_unit_test_setup_teardown(test_pages_freed_at_hangup, test_setup, test_teardown),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
