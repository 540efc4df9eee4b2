/* SPDX-License-Identifier: MIT */
/*
 * Tests of load_status, the control socket while moed loads its experts,
 * through libmoe on a real listening socket: STATUS shows the phase and
 * the bytes read (and follows them as they change), HELLO gets -EAGAIN (so
 * moe_connect() says "try again") and EXPERT_CHANGE -EAGAIN with a reason;
 * garbage gets no answer and does not stop the thread; a connection that
 * sends nothing delays the next one by at most its timeout; stop joins the
 * thread and leaves the listening socket open and working.
 */
#include "test_assert.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <moe.h>

#include "control/load_status.h"

static char dir[] = "/tmp/test_load_status.XXXXXX";
static char sock_path[108];

static int listen_on(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	ASSERT_OK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_OK(listen(fd, 16));
	return fd;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ASSERT_OK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
	return fd;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static json_t *status(void)
{
	char *text = NULL;
	json_t *root;

	ASSERT_OK(moe_daemon_status(sock_path, &text));
	root = json_loads(text, 0, NULL);
	free(text);
	assert_non_null(root);
	return root;
}

static json_int_t load_int(json_t *root, const char *key)
{
	return json_integer_value(json_object_get(json_object_get(root, "load"), key));
}

static void test_answers_while_loading(void **state)
{
	static struct store_progress progress;
	struct load_status *ls = NULL;
	struct moe_client_opts o;
	struct moe_client *c = NULL;
	uint64_t epoch;
	char why[128], garbage[3] = { 1, 2, 3 };
	int listen_fd = listen_on(sock_path), quiet, g;
	double t0;
	json_t *root;

	(void)state;
	store_progress_init(&progress);
	atomic_store(&progress.phase, STORE_PHASE_LOADING);
	atomic_store(&progress.bytes_total, 1000);
	atomic_store(&progress.bytes_done, 250);
	ASSERT_OK(load_status_start(listen_fd, &progress, &ls));

	root = status();
	assert_string_equal(json_string_value(json_object_get(json_object_get(root, "daemon"),
								 "phase")),
			    "loading");
	assert_string_equal(json_string_value(json_object_get(json_object_get(root, "load"),
								 "phase")),
			    "loading");
	ASSERT_EQ(load_int(root, "bytes"), 250);
	ASSERT_EQ(load_int(root, "total"), 1000);
	ASSERT_EQ(json_integer_value(json_object_get(json_object_get(root, "daemon"), "pid")),
		  getpid());
	json_decref(root);
	atomic_store(&progress.bytes_done, 900); /* it follows the load */
	root = status();
	ASSERT_EQ(load_int(root, "bytes"), 900);
	json_decref(root);

	moe_client_opts_init(&o);
	o.socket_path = sock_path;
	ASSERT_ERRNO(moe_connect(&o, &c), EAGAIN);
	assert_null(c);
	ASSERT_ERRNO(moe_daemon_expert_change(sock_path, MOE_EXPERT_CHANGE_REPLICATE, 0, 0, 1,
					      &epoch, why, sizeof(why)),
		     EAGAIN);
	assert_non_null(strstr(why, "loading"));

	/* garbage: no answer, and the next connection is served */
	g = connect_to(sock_path);
	ASSERT_EQ(send(g, garbage, sizeof(garbage), 0), (ssize_t)sizeof(garbage));
	ASSERT_EQ(recv(g, why, sizeof(why), 0), 0); /* closed without a reply */
	close(g);
	/* a silent connection holds the thread for its timeout at most */
	quiet = connect_to(sock_path);
	t0 = now_s();
	json_decref(status());
	assert_true(now_s() - t0 < 5.0);
	close(quiet);

	ls = load_status_stop(ls);
	assert_null(ls);
	/* the socket is still open and listening: a connection is queued for the reactor */
	g = connect_to(sock_path);
	close(g);
	close(listen_fd);
	unlink(sock_path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_answers_while_loading),
	};
	int r;

	if (!mkdtemp(dir))
		return 1;
	snprintf(sock_path, sizeof(sock_path), "%s/moed.sock", dir);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	rmdir(dir);
	return r;
}
