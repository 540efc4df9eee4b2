/* SPDX-License-Identifier: MIT */
/*
 * The status shows a client's details only to root, moed's own euid and
 * the client's own uid; the totals to everyone.
 *
 * moed runs as root with socket_mode = 0666, so that another uid can
 * connect. The test process (root) connects a libmoe client, "priv-root",
 * and stays connected. A forked child drops to uid and gid 65534 and
 *
 *   (a) asks for the status with moe_daemon_status(): totals.clients >= 1,
 *       "clients" holds no entry at all (root's session is not its), and
 *       there is no "config" (root's status has it);
 *   (b) connects its own libmoe client, "priv-nobody", and asks again:
 *       "clients" holds exactly its own session (uid 65534), not root's.
 *
 * While the child stays connected, the test process (root) sees both
 * sessions with their uids. moed exits 0 on SIGTERM. Without root the test
 * cannot change uid and exits 77.
 *
 * usage: it_status_privacy MOED [MOECTL]
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"

#define NOBODY           65534
#define CHILD_TIMEOUT_MS 60000

static const char *arg_moed;
static struct test_daemon daemon_;

/* The status as the caller sees it: parsed, with its "clients" array. */
static json_t *status_clients(json_t **ret_clients)
{
	char *text = NULL;
	json_t *st;
	int r = moe_daemon_status(daemon_.socket, &text);

	if (r < 0) {
		fprintf(stderr, "[%d] moe_daemon_status: %s\n", (int)getpid(), moe_strerror(r));
		return NULL;
	}
	st = json_loads(text, 0, NULL);
	free(text);
	*ret_clients = st ? json_object_get(st, "clients") : NULL;
	if (!json_is_array(*ret_clients)) {
		json_decref(st);
		return NULL;
	}
	return st;
}

static int64_t client_int(json_t *client, const char *key)
{
	return json_integer_value(json_object_get(client, key));
}

static const char *client_name(json_t *client)
{
	const char *s = json_string_value(json_object_get(client, "name"));

	return s ? s : "(none)";
}

/* The child, as uid 65534: (a) and (b), then wait for EOF on @done_fd. */
static void __attribute__((noreturn)) nobody_child(int ready_fd, int done_fd)
{
	struct moe_client_opts o;
	struct moe_client *c;
	json_t *st, *clients, *mine;
	char byte = 1;

	alarm(CHILD_TIMEOUT_MS / 1000);
	CHILD_CHECK(setgroups(0, NULL) == 0, "setgroups: %s", strerror(errno));
	CHILD_CHECK(setgid(NOBODY) == 0, "setgid: %s", strerror(errno));
	CHILD_CHECK(setuid(NOBODY) == 0, "setuid: %s", strerror(errno));
	CHILD_CHECK(geteuid() == NOBODY && getegid() == NOBODY, "still uid %d gid %d",
	            (int)geteuid(), (int)getegid());

	/* (a) not connected: the totals, nobody else's session */
	st = status_clients(&clients);
	CHILD_CHECK(st, "no status for uid %d", NOBODY);
	CHILD_CHECK(test_json_int(st, "totals.clients") >= 1, "totals.clients %lld",
	            (long long)test_json_int(st, "totals.clients"));
	CHILD_CHECK(json_array_size(clients) == 0,
	            "uid %d sees %zu client(s), the first \"%s\" of uid %lld", NOBODY,
	            json_array_size(clients), client_name(json_array_get(clients, 0)),
	            (long long)client_int(json_array_get(clients, 0), "uid"));
	/* the configuration (paths, addresses) is the operator's */
	CHILD_CHECK(!json_object_get(st, "config"), "uid %d sees the configuration", NOBODY);
	json_decref(st);

	/* (b) connected: its own session only */
	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "priv-nobody";
	o.arena_size = 1u << 20;
	CHILD_OK(moe_connect(&o, &c));
	st = status_clients(&clients);
	CHILD_CHECK(st, "no status for uid %d", NOBODY);
	CHILD_CHECK(test_json_int(st, "totals.clients") >= 2, "totals.clients %lld",
	            (long long)test_json_int(st, "totals.clients"));
	CHILD_CHECK(json_array_size(clients) == 1, "uid %d sees %zu client(s), the first \"%s\"",
	            NOBODY, json_array_size(clients), client_name(json_array_get(clients, 0)));
	mine = json_array_get(clients, 0);
	CHILD_CHECK(strcmp(client_name(mine), "priv-nobody") == 0 &&
	                client_int(mine, "uid") == NOBODY,
	            "uid %d sees client \"%s\" of uid %lld", NOBODY, client_name(mine),
	            (long long)client_int(mine, "uid"));
	json_decref(st);

	CHILD_CHECK(write(ready_fd, &byte, 1) == 1, "ready: %s", strerror(errno));
	CHILD_CHECK(read(done_fd, &byte, 1) == 0, "done: expected EOF");
	moe_close(c);
	_exit(0);
}

static void test_status_privacy(void **state)
{
	const char *extra[] = {"--set", "socket_mode=0666", NULL};
	struct moe_client_opts o;
	struct moe_client *c;
	json_t *st, *clients, *root_c, *nobody_c;
	int ready[2], done[2];
	pid_t pid;
	char byte;

	(void)state;
	/* uid 65534 must reach the socket inside the private folder */
	ASSERT_OK(chmod(daemon_.dir, 0755));
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "priv-root";
	o.arena_size = 1u << 20;
	ASSERT_OK(moe_connect(&o, &c));

	ASSERT_OK(pipe2(ready, O_CLOEXEC));
	ASSERT_OK(pipe2(done, O_CLOEXEC));
	pid = test_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(ready[0]);
		close(done[1]);
		nobody_child(ready[1], done[0]);
	}
	close(ready[1]);
	close(done[0]);
	if (read(ready[0], &byte, 1) == 1) {
		/* root sees both sessions, each with its uid */
		st = status_clients(&clients);
		assert_non_null(st);
		ASSERT_EQ(test_json_int(st, "totals.clients"), 2);
		ASSERT_EQ(json_array_size(clients), 2);
		assert_true(json_is_array(json_object_get(st, "config"))); /* root sees it */
		root_c = test_status_client(st, "priv-root");
		nobody_c = test_status_client(st, "priv-nobody");
		assert_non_null(root_c);
		assert_non_null(nobody_c);
		ASSERT_EQ(client_int(root_c, "uid"), 0);
		ASSERT_EQ(client_int(nobody_c, "uid"), NOBODY);
		json_decref(st);
	}
	close(ready[0]);
	close(done[1]); /* the child may go */
	ASSERT_OK(test_children_wait(&pid, 1, CHILD_TIMEOUT_MS));

	moe_close(c);
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
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
	    cmocka_unit_test(test_status_privacy),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "%s: skipped: needs root to connect as another uid (euid %d)\n",
		        argv[0], (int)geteuid());
		return 77;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
