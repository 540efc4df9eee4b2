/* SPDX-License-Identifier: MIT */
/*
 * moed as systemd runs it, without systemd: the test is the service
 * manager. It binds a datagram socket, starts a real moed with
 * NOTIFY_SOCKET (and WATCHDOG_USEC) pointing at it, and reads what moed
 * says, as systemd would:
 *
 *   - the phases: STATUS= while the experts load, READY=1 only once the
 *     socket serves, STATUS= as clients come and go, STOPPING=1 with the
 *     drain on SIGTERM, and exit 0;
 *   - the watchdog: WATCHDOG=1 from the reactor at half of WATCHDOG_USEC,
 *     never a gap of the whole timeout (what systemd would act on), also
 *     while one batch computes for longer than the timeout: the reactor
 *     never computes, so a long batch does not silence it;
 *   - the drain: after SIGTERM a new batch completes with -ESHUTDOWN while
 *     the one computing finishes;
 *   - reload (moectl reload, which sends SIGHUP): RELOADING=1 then READY=1,
 *     a live setting from a new drop-in in force, one that needs a restart
 *     named and left alone; a bad drop-in refused (moectl exits 1) with the
 *     settings in force unchanged; --check-config says the same up front;
 *   - socket activation under systemd-socket-activate (systemd's own tool:
 *     it binds the socket, sets LISTEN_FDS and execs moed): moed serves on
 *     the socket it was given and leaves it in place at exit; a socket of
 *     the wrong kind is refused with a message that names the setting;
 *   - OpenBLAS's serial build only: the status names it and its file (in
 *     MOE_OPENBLAS_SERIAL_DIR, which moed's RUNPATH names); pointed at the
 *     pthread build (LD_LIBRARY_PATH, which comes before a RUNPATH), moed
 *     refuses to start and names the file, as that build's threads, started
 *     before main(), could take the SIGTERM above and kill moed undrained.
 *
 * usage: it_systemd MOED MOECTL
 */
#include "test_assert.h"
#include "test_daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <moe.h>

#include "model/synth_model.h"
#include "util/diag.h"

static const char *arg_moed, *arg_moectl;
static struct test_daemon daemon_;

/* ---------------------------------------------------------------- the notify socket */

struct notify_listener {
	int fd;
	char path[160];
};

static void notify_open(struct notify_listener *nl)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(nl->path, sizeof(nl->path), "%s/notify.sock", daemon_.dir);
	assert_true(strlen(nl->path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, nl->path, strlen(nl->path) + 1);
	nl->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(nl->fd >= 0);
	ASSERT_OK(bind(nl->fd, (struct sockaddr *)&sa, sizeof(sa)));
	/* moed (started next) inherits it; the test's own process has no use for it */
	ASSERT_OK(setenv("NOTIFY_SOCKET", nl->path, 1));
}

static void notify_close(struct notify_listener *nl)
{
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	close(nl->fd);
	unlink(nl->path);
}

/*
 * The next datagram within @timeout_ms into @buf (NUL-terminated), with the
 * time it was read in *@ret_ns; false when none came.
 */
static bool notify_next(struct notify_listener *nl, int timeout_ms, char *buf, size_t size,
			int64_t *ret_ns)
{
	struct pollfd p = { .fd = nl->fd, .events = POLLIN };
	ssize_t n;

	if (poll(&p, 1, timeout_ms) <= 0)
		return false;
	n = recv(nl->fd, buf, size - 1, 0);
	if (n < 0)
		return false;
	buf[n] = '\0';
	if (ret_ns)
		*ret_ns = test_now_ns();
	return true;
}

/* Read until a message containing @needle (true), or @timeout_ms without one. */
static bool notify_wait_for(struct notify_listener *nl, const char *needle, int timeout_ms,
			    char *buf, size_t size)
{
	int64_t deadline = test_now_ns() + (int64_t)timeout_ms * 1000000;

	while (test_now_ns() < deadline) {
		int left = (int)((deadline - test_now_ns()) / 1000000);

		if (!notify_next(nl, left > 0 ? left : 0, buf, size, NULL))
			return false;
		print_message("notify: %s\n", buf);
		if (strstr(buf, needle))
			return true;
	}
	return false;
}

/* ---------------------------------------------------------------- tests */

static void test_phases_ready_status_stopping(void **state)
{
	struct notify_listener nl;
	struct moe_client_opts o;
	struct moe_client *c;
	char msg[512];
	bool status_before_ready = false, ready = false;

	(void)state;
	notify_open(&nl);
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	/* start returned: the socket answered "serving", so READY=1 must be in the queue */
	while (!ready && notify_next(&nl, 0, msg, sizeof(msg), NULL)) {
		print_message("notify: %s\n", msg);
		assert_true(strstr(msg, "WATCHDOG=1") == NULL); /* none asked for */
		if (strstr(msg, "READY=1"))
			ready = true;
		else if (strstr(msg, "STATUS=expert store") || strstr(msg, "STATUS=loading"))
			status_before_ready = true;
	}
	assert_true(status_before_ready);
	assert_true(ready);
	assert_true(strstr(msg, "STATUS=serving, 0 clients") != NULL);

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "it-systemd";
	ASSERT_OK(moe_connect(&o, &c));
	assert_true(notify_wait_for(&nl, "STATUS=serving, 1 client", 5000, msg, sizeof(msg)));
	moe_close(c);
	assert_true(notify_wait_for(&nl, "STATUS=serving, 0 clients", 5000, msg, sizeof(msg)));

	ASSERT_OK(kill(daemon_.pid, SIGTERM));
	assert_true(notify_wait_for(&nl, "STOPPING=1", 10000, msg, sizeof(msg)));
	assert_true(strstr(msg, "STATUS=draining") != NULL);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	notify_close(&nl);
}

/*
 * A model whose layer takes a while: d_model 512, d_ff 2048, 8 experts,
 * top-2. The batch size is found by timing (the machines differ).
 */
static void write_slow_model(char *path, size_t size)
{
	struct synth_opts so;
	struct diag d = { { 0 } };

	snprintf(path, size, "%s/slow.safetensors", daemon_.dir);
	synth_opts_default_model(&so);
	so.output = path;
	so.d_model = 512;
	so.d_ff = 2048;
	so.n_layers = 1;
	if (synth_model_write(&so, &d) < 0)
		fail_msg("cannot write the model: %s", d.msg);
}

struct batch {
	struct moe_client *c;
	float *x, *y;
	uint32_t d_model;
};

#define MAX_T 32768

/* A client with room for MAX_T tokens in and out; 0 or -errno. */
static int batch_connect(struct batch *b)
{
	struct moe_client_opts o;
	struct moe_model_info mi;
	uint64_t seed = 7;
	int r;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "it-systemd-long";
	o.arena_size = 2ull * MAX_T * 512 * 4 + (1u << 20);
	r = moe_connect(&o, &b->c);
	if (r < 0)
		return r;
	mi.size = sizeof(mi);
	r = moe_model_info_get(b->c, &mi);
	if (r < 0)
		return r;
	b->d_model = mi.d_model;
	r = moe_buf_alloc(b->c, (size_t)MAX_T * mi.d_model * 4, (void **)&b->x);
	if (r < 0)
		return r;
	r = moe_buf_alloc(b->c, (size_t)MAX_T * mi.d_model * 4, (void **)&b->y);
	if (r < 0)
		return r;
	test_fill_normal(b->x, (size_t)MAX_T * mi.d_model, &seed);
	return 0;
}

static void batch_open(struct batch *b)
{
	ASSERT_OK(batch_connect(b));
}

static void batch_open_child(struct batch *b)
{
	CHILD_OK(batch_connect(b));
}

/* Submit one batch of @T tokens; returns when its completion is reaped. */
static void batch_run(struct batch *b, uint32_t T)
{
	struct moe_request rq;
	struct moe_completion done;

	moe_request_init(&rq);
	rq.layer = 0;
	rq.n_tokens = T;
	rq.input = b->x;
	rq.output = b->y;
	ASSERT_OK(moe_forward(b->c, &rq, &done));
	ASSERT_EQ(done.status, 0);
}

#define WATCHDOG_USEC 1000000

static void test_watchdog_while_a_long_batch_computes(void **state)
{
	const char *extra[] = { "--model", NULL, "--set", "merge_window_us=0", NULL };
	char model[256], msg[256];
	struct notify_listener nl;
	struct batch b = { 0 };
	int64_t t0, seconds_ns, last, gap, longest = 0;
	unsigned pings = 0;
	uint32_t T = 1024;
	pid_t pid;

	(void)state;
	write_slow_model(model, sizeof(model));
	extra[1] = model;
	notify_open(&nl);
	ASSERT_OK(setenv("WATCHDOG_USEC", "1000000", 1));
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	batch_open(&b);

	/* grow the batch until one takes 2.5 timeouts (or the arena is full) */
	for (;;) {
		t0 = test_now_ns();
		batch_run(&b, T);
		seconds_ns = test_now_ns() - t0;
		if (seconds_ns >= 5ll * WATCHDOG_USEC * 1000 / 2 || T == MAX_T)
			break;
		T = (uint32_t)((double)T * 3.0e9 / (double)(seconds_ns + 1));
		T = T > MAX_T ? MAX_T : T < 1024 ? 1024 : T;
	}
	print_message("one batch of %u tokens computes for %.2f s\n", T, (double)seconds_ns / 1e9);
	if (seconds_ns < WATCHDOG_USEC * 1000ll)
		skip(); /* a machine this fast leaves nothing to see */

	/* the pings that came so far are not this measurement's */
	while (notify_next(&nl, 0, msg, sizeof(msg), NULL))
		;
	pid = test_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* the batch runs in a child, so the test reads the pings as they come */
		struct batch cb = { 0 };

		struct moe_request rq;
		struct moe_completion done;

		batch_open_child(&cb);
		moe_request_init(&rq);
		rq.layer = 0;
		rq.n_tokens = T;
		rq.input = cb.x;
		rq.output = cb.y;
		CHILD_OK(moe_forward(cb.c, &rq, &done));
		CHILD_CHECK(done.status == 0, "status %d", done.status);
		moe_close(cb.c);
		_exit(0);
	}
	last = t0 = test_now_ns();
	for (;;) {
		int64_t at;
		int status;

		assert_true(test_now_ns() - t0 < 120ll * 1000000000);
		if (notify_next(&nl, 100, msg, sizeof(msg), &at) && strstr(msg, "WATCHDOG=1")) {
			pings++;
			gap = at - last;
			longest = gap > longest ? gap : longest;
			last = at;
		}
		if (waitpid(pid, &status, WNOHANG) == pid) {
			assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
			break;
		}
	}
	seconds_ns = test_now_ns() - t0;
	print_message("%u pings in %.2f s, the longest gap %.3f s (timeout %.3f s)\n", pings,
		      (double)seconds_ns / 1e9, (double)longest / 1e9, WATCHDOG_USEC / 1e6);
	/* every half timeout one ping; at least every whole timeout or systemd kills moed */
	assert_true(pings >= (unsigned)(seconds_ns / (WATCHDOG_USEC * 1000ll)));
	assert_true(longest < WATCHDOG_USEC * 1000ll);

	moe_close(b.c);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	notify_close(&nl);
}

/*
 * SIGTERM while a long batch computes: STOPPING=1 comes, a batch another
 * client submits now completes at once with -ESHUTDOWN (not run, not
 * queued), the long batch still completes with status 0, and moed exits 0.
 */
static void test_drain_refuses_new_batches(void **state)
{
	const char *extra[] = { "--model", NULL, "--set", "merge_window_us=0", NULL };
	char model[256], msg[256];
	struct notify_listener nl;
	struct batch big = { 0 }, late = { 0 };
	struct moe_request rq;
	struct moe_completion done;
	int n;

	(void)state;
	write_slow_model(model, sizeof(model));
	extra[1] = model;
	notify_open(&nl);
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	batch_open(&big);
	batch_open(&late);

	moe_request_init(&rq);
	rq.layer = 0;
	rq.n_tokens = MAX_T;
	rq.input = big.x;
	rq.output = big.y;
	ASSERT_OK(moe_submit(big.c, &rq));
	test_sleep_ms(100); /* taken off the ring and computing */
	ASSERT_OK(kill(daemon_.pid, SIGTERM));
	assert_true(notify_wait_for(&nl, "STOPPING=1", 10000, msg, sizeof(msg)));
	n = moe_reap(big.c, &done, 1);
	if (n != 0) {
		print_message("the long batch finished before the drain began: nothing to see\n");
		skip();
	}
	rq.n_tokens = 16;
	rq.input = late.x;
	rq.output = late.y;
	ASSERT_OK(moe_submit(late.c, &rq));
	ASSERT_EQ(moe_wait(late.c, &done, 1, 30ll * 1000000000), 1);
	ASSERT_EQ(done.status, -ESHUTDOWN);
	ASSERT_EQ(moe_wait(big.c, &done, 1, 120ll * 1000000000), 1);
	ASSERT_EQ(done.status, 0);
	moe_close(late.c);
	moe_close(big.c);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	notify_close(&nl);
}

/* @argv to its end; its exit code (test_run), its stdout into @out (NULL: the test's). */
static int run_command_to(const char *const *argv, const char *out)
{
	int r = test_run(argv, out, 60000);

	assert_true(r >= -1);
	return r;
}

static int run_command(const char *const *argv)
{
	return run_command_to(argv, NULL);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	ASSERT_EQ(fclose(f), 0);
}

static void test_reload(void **state)
{
	char conf[160], dropin_dir[176], dropin[200], msg[512];
	const char *extra[] = { "--config", conf, NULL };
	const char *reload[] = { arg_moectl, "--socket", daemon_.socket, "reload", NULL };
	const char *check[] = { arg_moed, "--check-config", conf, NULL };
	const char *config[] = { arg_moectl, "--socket", daemon_.socket, "config", "--changed",
				 NULL };
	char out[192], *text;
	struct notify_listener nl;
	json_t *st;

	(void)state;
	snprintf(conf, sizeof(conf), "%s/moed.conf", daemon_.dir);
	snprintf(out, sizeof(out), "%s/config.txt", daemon_.dir);
	snprintf(dropin_dir, sizeof(dropin_dir), "%s.d", conf);
	snprintf(dropin, sizeof(dropin), "%s/50-test.conf", dropin_dir);
	write_text(conf, "merge_window_us = 300\nworkers = 2\n");
	ASSERT_OK(mkdir(dropin_dir, 0755));
	ASSERT_EQ(run_command(check), 0);
	notify_open(&nl);
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	assert_true(notify_wait_for(&nl, "READY=1", 5000, msg, sizeof(msg)));

	/* a live change and one that waits for a restart */
	write_text(dropin, "merge_window_us = 40\nworkers = 1\n");
	ASSERT_EQ(run_command(check), 0);
	ASSERT_EQ(run_command(reload), 0);
	assert_true(notify_wait_for(&nl, "RELOADING=1", 5000, msg, sizeof(msg)));
	assert_true(notify_wait_for(&nl, "READY=1", 5000, msg, sizeof(msg)));
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "daemon.merge_window_us"), 40);
	ASSERT_EQ(test_json_int(st, "daemon.workers"), 2);
	ASSERT_EQ(test_json_int(st, "daemon.reload.count"), 1);
	ASSERT_EQ(test_json_int(st, "daemon.reload.refused"), 0);
	assert_non_null(strstr(test_json_str(st, "daemon.reload.message"), "workers"));
	json_decref(st);
	/* moectl config: what is in force, the changed keys only */
	ASSERT_EQ(run_command_to(config, out), 0);
	text = test_read_file(out);
	assert_non_null(text);
	print_message("moectl config --changed:\n%s", text);
	assert_non_null(strstr(text, "merge_window_us = 40    # changes on reload\n"));
	assert_non_null(strstr(text, "\nworkers = 2\n")); /* the 1 waits for a restart */
	assert_null(strstr(text, "poll_us ="));             /* the default: not shown */
	free(text);

	/* a bad drop-in: refused, everything stays */
	write_text(dropin, "merge_window_us = soon\n");
	ASSERT_EQ(run_command(check), 1);
	ASSERT_EQ(run_command(reload), 1);
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "daemon.merge_window_us"), 40);
	ASSERT_EQ(test_json_int(st, "daemon.reload.count"), 2);
	ASSERT_EQ(test_json_int(st, "daemon.reload.refused"), 1);
	assert_non_null(strstr(test_json_str(st, "daemon.reload.message"), "50-test.conf:1"));
	json_decref(st);

	/* valid alone, not with what stays until a restart (max_clients 64) */
	write_text(dropin, "max_clients_per_process = 100\n");
	ASSERT_EQ(run_command(reload), 1);
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "daemon.reload.refused"), 2);
	json_decref(st);

	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	notify_close(&nl);
}

static bool have_socket_activate(void)
{
	return access("/usr/bin/systemd-socket-activate", X_OK) == 0 ||
	       access("/bin/systemd-socket-activate", X_OK) == 0;
}

static void test_socket_activation(void **state)
{
	const char *launcher[] = { "systemd-socket-activate", "--seqpacket", "--listen", NULL,
				   NULL };
	struct moe_client_opts o;
	struct moe_client *c;
	struct stat st;

	(void)state;
	if (!have_socket_activate())
		skip();
	launcher[3] = daemon_.socket;
	daemon_.launcher = launcher;
	ASSERT_OK(test_daemon_log_to_file(&daemon_, "activated.log"));
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	ASSERT_EQ(test_daemon_log_count(&daemon_, "from systemd (socket activation)"), 1);
	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "it-activated";
	ASSERT_OK(moe_connect(&o, &c));
	moe_close(c);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	/* the socket is the service manager's: it stays for the next moed */
	ASSERT_OK(lstat(daemon_.socket, &st));
	assert_true(S_ISSOCK(st.st_mode));
	unlink(daemon_.socket);
	daemon_.launcher = NULL;
}

/*
 * A stream socket where moed speaks SOCK_SEQPACKET. systemd-socket-activate
 * execs moed on the first connection, which a SEQPACKET client cannot make
 * to a stream socket: the test connects with SOCK_STREAM itself, and
 * starts the launcher without the harness (which waits for a STATUS answer).
 */
static void test_socket_activation_wrong_kind(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char log_path[160], state_set[160], moed_log[4096] = "";
	int status, fd = -1;
	pid_t pid;
	FILE *f;

	(void)state;
	if (!have_socket_activate())
		skip();
	snprintf(log_path, sizeof(log_path), "%s/wrong-kind.log", daemon_.dir);
	snprintf(state_set, sizeof(state_set), "state_dir=%s", daemon_.state_dir);
	memcpy(sa.sun_path, daemon_.socket, strlen(daemon_.socket) + 1);
	pid = test_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int lfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		if (lfd < 0 || dup2(lfd, STDERR_FILENO) < 0)
			_exit(127);
		execlp("systemd-socket-activate", "systemd-socket-activate", "--listen",
		       daemon_.socket, arg_moed, "--foreground", "--socket", daemon_.socket,
		       "--set", state_set, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500 && fd < 0; i++) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fd >= 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			close(fd);
			fd = -1;
			test_sleep_ms(10);
		}
	}
	assert_true(fd >= 0);
	ASSERT_OK(test_child_wait(pid, TEST_DAEMON_START_TIMEOUT_MS, &status));
	close(fd);
	f = fopen(log_path, "r");
	assert_non_null(f);
	moed_log[fread(moed_log, 1, sizeof(moed_log) - 1, f)] = '\0';
	fclose(f);
	print_message("moed said: %s", moed_log);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
	assert_non_null(strstr(moed_log, "ListenSequentialPacket="));
	unlink(daemon_.socket);
}

/* The serial build, from the folder moed's RUNPATH names, reported as such. */
static void test_blas_serial(void **state)
{
	char dir[PATH_MAX];
	const char *library;
	json_t *st;

	(void)state;
	assert_non_null(realpath(MOE_OPENBLAS_SERIAL_DIR, dir));
	strcat(dir, "/");
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	assert_string_equal(test_json_str(st, "daemon.blas_threading"), "serial");
	library = test_json_str(st, "daemon.blas_library");
	assert_non_null(library);
	print_message("OpenBLAS: %s\n", library);
	assert_true(strncmp(library, dir, strlen(dir)) == 0);
	json_decref(st);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

/* Given the pthread build instead, moed refuses to start and names the file. */
static void test_blas_threaded_refused(void **state)
{
#ifdef MOE_OPENBLAS_PTHREAD_DIR
	const char *old = getenv("LD_LIBRARY_PATH");
	char *saved = old ? strdup(old) : NULL;
	int r;

	(void)state;
	ASSERT_OK(test_daemon_log_to_file(&daemon_, "threaded.log"));
	assert_true(setenv("LD_LIBRARY_PATH", MOE_OPENBLAS_PTHREAD_DIR, 1) == 0);
	r = test_daemon_start(&daemon_, NULL);
	if (saved)
		setenv("LD_LIBRARY_PATH", saved, 1);
	else
		unsetenv("LD_LIBRARY_PATH");
	free(saved);
	ASSERT_ERRNO(r, ECHILD);
	ASSERT_EQ(test_daemon_log_count(&daemon_, "OpenBLAS loaded from " MOE_OPENBLAS_PTHREAD_DIR
						    "/"),
		  1);
	ASSERT_EQ(test_daemon_log_count(&daemon_, "is its pthreads build: moed needs the serial"),
		  1);
#else
	(void)state;
	print_message("no pthread OpenBLAS at configure time (libopenblas-pthread-dev)\n");
	skip();
#endif
}

static int setup(void **state)
{
	(void)state;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
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
		cmocka_unit_test_setup_teardown(test_phases_ready_status_stopping, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_watchdog_while_a_long_batch_computes, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_drain_refuses_new_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_socket_activation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_socket_activation_wrong_kind, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_blas_serial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_blas_threaded_refused, setup, teardown),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED MOECTL\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	arg_moectl = argc > 2 ? argv[2] : NULL;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
