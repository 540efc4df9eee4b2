/* SPDX-License-Identifier: MIT */
/*
 * Admission on moed's control socket, against a real moed (the holes a
 * hostile-client audit found; shm/THREAT-MODEL.md items 1 and 2):
 *
 *  - Silent flood: a forked process holds 64 connections that never speak
 *    and reopens each as soon as moed closes it. Meanwhile this process
 *    runs `moectl status` 10 times and a libmoe client connects and runs a
 *    forward: all succeed (both run as root like the flood, so the
 *    per-process pending limit is what lets them in), the flood was
 *    really evicted (it reopened connections), and moed's log gained a
 *    bounded number of lines about it (5 per 10 s and a "suppressed" line).
 *  - Sessions per process: with max_clients = 8 (max_clients_per_process
 *    derived: 2), a forked process opening sessions until refused gets
 *    exactly 2 and then -EUSERS; this process still gets a session, and
 *    the status request still works.
 *  - Out of fds: moed's soft RLIMIT_NOFILE lowered (prlimit on its pid) to
 *    the fds it has, and connections made: accept fails; moed then stays idle (its CPU time grows by less than
 *    20% of 2 s of wall time) and logs the episode once; with the limit
 *    restored, a client is served again and the end of the episode is
 *    logged after its start.
 *  - A max_clients that cannot fit under RLIMIT_NOFILE is refused at start.
 *
 * usage: it_admission MOED MOECTL
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"

#define N_SILENT 64

static const char *arg_moed, *arg_moectl;
static struct test_daemon daemon_;

/* ---------------------------------------------------------------- helpers */

/* A blocking SEQPACKET connection to @path, or -errno. */
static int sock_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	return fd;
}

/* `moectl --socket SOCKET status`, its output discarded; its exit status. */
static int run_moectl_status(const char *socket)
{
	int status;
	pid_t pid = test_fork();

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		execl(arg_moectl, arg_moectl, "--socket", socket, "status", (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || test_child_wait(pid, 30000, &status) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Connect a client named @name and run one 4-token forward on layer 0; 0 or -errno. */
static int client_forward(const char *socket, const char *name)
{
	struct moe_client_opts o;
	struct moe_client *c = NULL;
	struct moe_model_info mi = {.size = sizeof(mi)};
	struct moe_request rq;
	struct moe_completion done;
	uint64_t seed = 42;
	float *x, *y;
	int r;

	moe_client_opts_init(&o);
	o.socket_path = socket;
	o.name = name;
	o.arena_size = 1u << 20;
	r = moe_connect(&o, &c);
	if (r < 0)
		return r;
	r = moe_model_info_get(c, &mi);
	if (r == 0)
		r = moe_buf_alloc(c, 4 * mi.d_model * sizeof(float), (void **)&x);
	if (r == 0)
		r = moe_buf_alloc(c, 4 * mi.d_model * sizeof(float), (void **)&y);
	if (r == 0) {
		test_fill_normal(x, 4 * mi.d_model, &seed);
		moe_request_init(&rq);
		rq.layer = 0;
		rq.n_tokens = 4;
		rq.input = x;
		rq.output = y;
		r = moe_forward(c, &rq, &done);
	}
	if (r == 0 && done.status != 0) {
		fprintf(stderr, "test: %s: the forward completed with %d\n", name, done.status);
		r = done.status;
	} else if (r < 0) {
		fprintf(stderr, "test: %s: connect/alloc/forward: %s\n", name, strerror(-r));
	}
	moe_close(c);
	return r;
}

/* moed's utime + stime, in seconds (all its threads), or -1. */
static double proc_cpu_s(pid_t pid)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* after "(comm)": state is field 3, utime 14, stime 15 */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
	                 &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int proc_fd_count(pid_t pid)
{
	char cmd[64];
	int n = -1;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "ls /proc/%d/fd | wc -l", (int)pid);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%d", &n) != 1)
		n = -1;
	pclose(f);
	return n;
}

/* The 1-based number of the first log line containing @needle, or 0. */
static int log_first_line(const char *needle)
{
	char line[4096];
	FILE *f = fopen(daemon_.log_path, "re");
	int no = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		no++;
		if (strstr(line, needle)) {
			fclose(f);
			return no;
		}
	}
	fclose(f);
	return 0;
}

/* Lines moed writes about refused or closed connections. */
static int log_conn_lines(void)
{
	static const char *const needles[] = {"silent connections", "said nothing", "refusing",
	                                      "refused", "suppressed", "accept:"};
	int n = 0;

	for (size_t i = 0; i < sizeof(needles) / sizeof(needles[0]); i++) {
		int c = test_daemon_log_count(&daemon_, needles[i]);

		if (c > 0)
			n += c;
	}
	return n;
}

/* ---------------------------------------------------------------- silent flood */

struct flood_stats {
	atomic_uint opened;   /* connections opened in all (first 64 + reopened) */
	atomic_uint reopened; /* reopened after moed closed one */
};

/* The hostile process: 64 silent connections, each reopened as soon as moed closes it. */
static void __attribute__((noreturn)) flood_child(const char *socket, struct flood_stats *st)
{
	struct pollfd pfd[N_SILENT];

	for (unsigned i = 0; i < N_SILENT; i++) {
		pfd[i].fd = sock_connect(socket);
		CHILD_CHECK(pfd[i].fd >= 0, "connect: %s", strerror(-pfd[i].fd));
		pfd[i].events = POLLIN;
		atomic_fetch_add(&st->opened, 1);
	}
	for (;;) {
		if (poll(pfd, N_SILENT, 1000) < 0)
			_exit(1);
		for (unsigned i = 0; i < N_SILENT; i++) {
			if (!pfd[i].revents)
				continue;
			close(pfd[i].fd);
			pfd[i].fd = sock_connect(socket);
			CHILD_CHECK(pfd[i].fd >= 0, "reconnect: %s", strerror(-pfd[i].fd));
			atomic_fetch_add(&st->opened, 1);
			atomic_fetch_add(&st->reopened, 1);
		}
	}
}

static void test_silent_flood(void **state)
{
	struct flood_stats *st;
	int64_t t0 = test_now_ns(), deadline;
	double elapsed_s;
	int status, lines, bound;
	pid_t flood;

	(void)state;
	ASSERT_OK(test_daemon_log_to_file(&daemon_, "flood.log"));
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	st = mmap(NULL, sizeof(*st), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(st != MAP_FAILED);
	memset(st, 0, sizeof(*st));
	flood = test_fork();
	assert_true(flood >= 0);
	if (flood == 0)
		flood_child(daemon_.socket, st);
	/* the flood is on: all 64 opened and moed is closing them */
	deadline = test_now_ns() + 20ll * 1000000000;
	while ((atomic_load(&st->opened) < N_SILENT || atomic_load(&st->reopened) < N_SILENT) &&
	       test_now_ns() < deadline)
		test_sleep_ms(10);
	ASSERT_EQ(atomic_load(&st->opened) >= N_SILENT, 1);

	for (int i = 0; i < 10; i++)
		ASSERT_EQ(run_moectl_status(daemon_.socket), 0);
	ASSERT_OK(client_forward(daemon_.socket, "it-admission-flood"));
	ASSERT_EQ(test_proc_state(flood) != 'Z', 1); /* the flood ran all along */

	kill(flood, SIGKILL);
	ASSERT_OK(test_child_wait(flood, 10000, &status));
	fprintf(stderr, "test: the flood opened %u connections, %u of them reopened\n",
	        atomic_load(&st->opened), atomic_load(&st->reopened));
	/* moed closed the flood's surplus, not the status requests and the client */
	assert_true(atomic_load(&st->reopened) >= N_SILENT);
	munmap(st, sizeof(*st));
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);

	/* 5 lines per 10 s window and one "suppressed" line per window, over every peer */
	elapsed_s = (double)(test_now_ns() - t0) / 1e9;
	bound = (int)(elapsed_s / 10.0 + 2) * 6;
	lines = log_conn_lines();
	fprintf(stderr, "test: %d log lines about connections in %.1f s (bound %d), %d in all\n",
	        lines, elapsed_s, bound, test_daemon_log_count(&daemon_, NULL));
	assert_true(lines >= 1);
	assert_true(lines <= bound);
	assert_true(test_daemon_log_count(&daemon_, NULL) <= bound + 20);
}

/* ---------------------------------------------------------------- sessions */

static void test_sessions_per_process(void **state)
{
	const char *extra[] = {"--set", "max_clients=8", NULL};
	struct moe_client_opts o;
	struct moe_client *mine = NULL;
	int report[2], go[2], got[2] = {0, 0}, status;
	json_t *js;
	pid_t hog;
	char c;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	assert_int_equal(pipe2(report, O_CLOEXEC), 0);
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	hog = test_fork();
	assert_true(hog >= 0);
	if (hog == 0) {
		struct moe_client *cl[9] = {0};
		int n = 0, r = 0, msg[2];

		close(report[0]);
		close(go[1]);
		moe_client_opts_init(&o);
		o.socket_path = daemon_.socket;
		o.name = "it-admission-hog";
		o.arena_size = 1u << 20;
		while (n < 9 && (r = moe_connect(&o, &cl[n])) == 0)
			n++;
		msg[0] = n;
		msg[1] = r;
		CHILD_CHECK(write(report[1], msg, sizeof(msg)) == sizeof(msg), "write");
		/* hold the sessions until the parent has connected */
		CHILD_CHECK(read(go[0], msg, 1) >= 0, "read");
		for (int i = 0; i < n; i++)
			moe_close(cl[i]);
		_exit(0);
	}
	close(report[1]);
	close(go[0]);
	ASSERT_EQ(read(report[0], got, sizeof(got)), sizeof(got));
	fprintf(stderr, "test: one process got %d sessions, then %d (%s)\n", got[0], got[1],
	        strerror(-got[1]));
	ASSERT_EQ(got[0], 2); /* max_clients_per_process = max(1, 8 / 4) */
	ASSERT_EQ(got[1], -EUSERS);

	/* another process still gets a session, and status still answers */
	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "it-admission-second";
	o.arena_size = 1u << 20;
	ASSERT_OK(moe_connect(&o, &mine));
	js = test_status_get(daemon_.socket);
	assert_non_null(js);
	ASSERT_EQ(test_json_int(js, "totals.clients"), 3);
	ASSERT_EQ(test_json_int(js, "totals.clients_refused"), 1);
	json_decref(js);
	moe_close(mine);

	c = 'x';
	ASSERT_EQ(write(go[1], &c, 1), 1);
	close(go[1]);
	close(report[0]);
	ASSERT_OK(test_child_wait(hog, 30000, &status));
	ASSERT_EQ(WIFEXITED(status) && WEXITSTATUS(status) == 0, 1);
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

/* ---------------------------------------------------------------- out of fds */

static void test_out_of_fds(void **state)
{
	const char *extra[] = {"--set", "hello_timeout_ms=600000", NULL};
	struct rlimit low, old;
	int conns[4], n_conns = 0, n_fds, lines0, lines1, starved, resumed;
	double cpu0, cpu1, wall;
	int64_t t0, deadline;

	(void)state;
	ASSERT_OK(test_daemon_log_to_file(&daemon_, "fds.log"));
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	test_sleep_ms(300); /* the start-up status request's fds are gone */
	n_fds = proc_fd_count(daemon_.pid);
	assert_true(n_fds > 0);
	/*
	 * No room for another fd: the first connection's accept fails (or the
	 * second's, if an fd counted was on its way out). At most
	 * ADM_PENDING_PER_PID (4) connections, so that moed evicts none of
	 * ours and frees nothing. Only the soft limit: lowering the hard one could not be undone
	 * without CAP_SYS_RESOURCE (moed raises soft to hard only at start).
	 */
	ASSERT_EQ(prlimit(daemon_.pid, RLIMIT_NOFILE, NULL, &old), 0);
	low.rlim_cur = (rlim_t)n_fds;
	low.rlim_max = old.rlim_max;
	ASSERT_EQ(prlimit(daemon_.pid, RLIMIT_NOFILE, &low, NULL), 0);
	deadline = test_now_ns() + 10ll * 1000000000;
	/* strerror(EMFILE): any build of moed names it when accept fails */
	while (!log_first_line("Too many open files") && test_now_ns() < deadline) {
		if (n_conns < 4) {
			conns[n_conns] = sock_connect(daemon_.socket);
			ASSERT_OK(conns[n_conns]);
			n_conns++;
		}
		test_sleep_ms(100);
	}
	starved = log_first_line("Too many open files");
	assert_true(starved > 0);
	fprintf(stderr, "test: accept failed after %d connections (moed had %d fds)\n", n_conns,
	        n_fds);
	assert_true(n_conns >= 1);

	/* while accept fails, moed idles: CPU and log lines */
	test_sleep_ms(200);
	lines0 = test_daemon_log_count(&daemon_, NULL);
	cpu0 = proc_cpu_s(daemon_.pid);
	t0 = test_now_ns();
	test_sleep_ms(2000);
	cpu1 = proc_cpu_s(daemon_.pid);
	wall = (double)(test_now_ns() - t0) / 1e9;
	lines1 = test_daemon_log_count(&daemon_, NULL);
	fprintf(stderr, "test: out of fds: moed used %.2f s of CPU in %.2f s, %d new log lines\n",
	        cpu1 - cpu0, wall, lines1 - lines0);
	assert_true(cpu0 >= 0 && cpu1 >= 0);
	assert_true(cpu1 - cpu0 < 0.2 * wall);
	assert_true(lines1 - lines0 <= 2);
	ASSERT_EQ(test_daemon_log_count(&daemon_, "not accepting"), 1); /* once per episode */

	/* fds free up: a client is served again, and the episode's end is logged after its start */
	ASSERT_EQ(prlimit(daemon_.pid, RLIMIT_NOFILE, &old, NULL), 0);
	for (int i = 0; i < n_conns; i++)
		close(conns[i]);
	ASSERT_OK(client_forward(daemon_.socket, "it-admission-fds"));
	resumed = log_first_line("accepting connections again");
	assert_true(resumed > starved);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

/* ---------------------------------------------------------------- fd limit at start */

static void test_fd_limit_checked_at_start(void **state)
{
	const char *small[] = {"--set", "max_clients=8", NULL};

	(void)state;
	ASSERT_OK(test_daemon_log_to_file(&daemon_, "start.log"));
	/* 64 clients need about 64 + 64 + 5 * 64 = 448 fds */
	daemon_.nofile = 200;
	ASSERT_ERRNO(test_daemon_start(&daemon_, NULL), ECHILD);
	ASSERT_EQ(test_daemon_log_count(&daemon_, "needs about 448 file descriptors"), 1);
	/* 8 clients: 64 + 64 + 40 = 168 fit */
	ASSERT_OK(test_daemon_start(&daemon_, small));
	ASSERT_OK(client_forward(daemon_.socket, "it-admission-small"));
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static int test_setup(void **state)
{
	(void)state;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
}

static int test_teardown(void **state)
{
	char line[4096];
	FILE *f;

	(void)state;
	/* moed's log went to a file: show it (ctest prints it when the test fails) */
	f = daemon_.log_path[0] ? fopen(daemon_.log_path, "re") : NULL;
	if (f) {
		fprintf(stderr, "test: moed's log (%s):\n", daemon_.log_path);
		for (int n = 0; n < 200 && fgets(line, sizeof(line), f); n++)
			fprintf(stderr, "  %s", line);
		fclose(f);
	}
	test_daemon_done(&daemon_);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_silent_flood, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_sessions_per_process, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_out_of_fds, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_fd_limit_checked_at_start, test_setup,
	                                    test_teardown),
	};

	if (argc < 3) {
		fprintf(stderr, "usage: %s MOED MOECTL\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	arg_moectl = argv[2];
	return cmocka_run_group_tests(tests, NULL, NULL);
}
