/* SPDX-License-Identifier: MIT */
/*
 * moectl top in batch mode (stdout a pipe), against a real moed and against
 * a fake one:
 *   - after a few batches (moectl workload), two frames: the daemon line,
 *     a row per layer, and for every expert that got tokens a bar of its
 *     count (the first frame shows the counts since moed started, which the
 *     test reads from the status itself: nothing runs in between);
 *   - a socket nobody serves: exit 1 and a message, nothing on stdout; bad
 *     options: exit 2;
 *   - a fake moed on the control socket whose status carries escape
 *     sequences, layers[].latency_us and peers, and whose second sample
 *     moved its counters over two seconds of its uptime: the rates are
 *     exact (they come from the daemon's clock), the latency columns and the
 *     peers line appear, and no control byte reaches stdout.
 * Nothing here depends on timing: the rates come from the samples' uptimes.
 *
 * The interactive view on a pseudo-terminal: it_top_pty.c.
 *
 * usage: it_top MOED MOECTL
 */
#include "test_assert.h"
#include "test_daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "moe_proto.h"

static const char *arg_moed, *arg_moectl;
static struct test_daemon daemon_;

/* What a moectl run printed, and how it ended. */
struct run_result {
	int status; /* raw wait status */
	char out[1 << 16], err[1 << 14];
	size_t out_len, err_len;
};

/* Append what @fd has to @buf (kept NUL-terminated); false at EOF. */
static bool drain(int fd, char *buf, size_t size, size_t *len)
{
	char scratch[4096];
	ssize_t n = read(fd, scratch, sizeof(scratch));

	if (n <= 0)
		return n < 0 && errno == EINTR;
	if ((size_t)n > size - 1 - *len)
		n = (ssize_t)(size - 1 - *len); /* keep the start; the test then fails on content */
	memcpy(buf + *len, scratch, (size_t)n);
	*len += (size_t)n;
	buf[*len] = '\0';
	return true;
}

/* moectl --socket @socket @args... with stdout and stderr captured. */
static void run_moectl(const char *socket, const char *const *args, struct run_result *res)
{
	const char *argv[16] = { arg_moectl, "--socket", socket };
	const char *command = args[0];
	int out[2], err[2];
	size_t n = 3;
	pid_t pid;

	for (; *args && n + 1 < sizeof(argv) / sizeof(argv[0]); args++)
		argv[n++] = *args;
	argv[n] = NULL;
	memset(res, 0, sizeof(*res));
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	assert_int_equal(pipe2(err, O_CLOEXEC), 0);
	pid = test_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		/* execv's prototype predates const; it does not write the strings */
		union {
			const char **c;
			char *const *v;
		} av = { .c = argv };

		execv(arg_moectl, av.v);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	for (bool out_open = true, err_open = true; out_open || err_open;) {
		struct pollfd p[2] = { { .fd = out_open ? out[0] : -1, .events = POLLIN },
				       { .fd = err_open ? err[0] : -1, .events = POLLIN } };

		if (poll(p, 2, -1) < 0)
			continue;
		if (p[0].revents)
			out_open = drain(out[0], res->out, sizeof(res->out), &res->out_len);
		if (p[1].revents)
			err_open = drain(err[0], res->err, sizeof(res->err), &res->err_len);
	}
	close(out[0]);
	close(err[0]);
	ASSERT_OK(test_child_wait(pid, 120000, &res->status));
	print_message("moectl %s: exit %d\n--- stdout\n%s--- stderr\n%s", command,
		      WIFEXITED(res->status) ? WEXITSTATUS(res->status) : -1, res->out, res->err);
}

static int exit_code(const struct run_result *res)
{
	return WIFEXITED(res->status) ? WEXITSTATUS(res->status) : 128 + WTERMSIG(res->status);
}

/* The number of lines of @text that start with @prefix. */
static unsigned count_lines_starting(const char *text, const char *prefix)
{
	unsigned n = 0;

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		n += strncmp(p, prefix, strlen(prefix)) == 0;
	return n;
}

static void assert_plain_lines(const char *text, size_t width)
{
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		if (len > width)
			fail_msg("a line of %zu columns (limit %zu): %.*s", len, width, (int)len, p);
		for (size_t i = 0; i < len; i++)
			if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] >= 0x7f)
				fail_msg("byte 0x%02x in the output: %.*s", (unsigned char)p[i],
					 (int)len, p);
		p += len + (nl != NULL);
	}
}

static void test_batch_frames(void **state)
{
	const char *load[] = { "workload", "--batches", "4", "--tokens", "32", NULL };
	const char *top[] = { "top", "--batch", "--iterations", "2", "--interval", "0.2", NULL };
	static struct run_result res;
	const char *frame2;
	json_t *st, *l;
	char want[128];
	size_t i;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	run_moectl(daemon_.socket, load, &res);
	ASSERT_EQ(exit_code(&res), 0);
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	run_moectl(daemon_.socket, top, &res);
	ASSERT_EQ(exit_code(&res), 0);
	assert_plain_lines(res.out, 100);
	ASSERT_EQ(count_lines_starting(res.out, "moed pid "), 2);
	/* frames separated by a blank line */
	frame2 = strstr(res.out, "\n\nmoed pid ");
	assert_non_null(frame2);
	snprintf(want, sizeof(want), "moed pid %lld, up ", (long long)daemon_.pid);
	assert_non_null(strstr(res.out, want));
	json_array_foreach(json_object_get(st, "layers"), i, l) {
		const json_t *tpe = json_object_get(l, "tokens_per_expert");
		long long layer = json_integer_value(json_object_get(l, "layer"));
		const char *bars;
		size_t e;
		json_t *v;

		/* its row in the table, in the first frame */
		snprintf(want, sizeof(want), "\n%5lld %8zu ", layer, json_array_size(tpe));
		assert_true(strstr(res.out, want) && strstr(res.out, want) < frame2);
		snprintf(want, sizeof(want), "layer %lld: tokens per expert since moed started\n",
			 layer);
		bars = strstr(res.out, want);
		assert_true(bars && bars < frame2);
		json_array_foreach(tpe, e, v) {
			long long t = json_integer_value(v);
			const char *row;

			snprintf(want, sizeof(want), "\n  e%-3zu %10lld %s", e, t, t > 0 ? "#" : "\n");
			row = strstr(bars, want);
			if (!row || row > frame2)
				fail_msg("layer %lld expert %zu (%lld tokens): no row '%s'", layer, e,
					 t, want + 1);
		}
	}
	json_decref(st);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static void test_nobody_serves(void **state)
{
	const char *top[] = { "top", "--batch", "--iterations", "1", NULL };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	static struct run_result res;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	(void)state;
	/* a socket file that nobody listens on any more: connect is refused */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/nobody.sock", daemon_.dir);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	run_moectl(sa.sun_path, top, &res);
	ASSERT_EQ(exit_code(&res), 1);
	ASSERT_EQ(res.out_len, 0);
	assert_non_null(strstr(res.err, "cannot get the status of moed at"));
}

static void test_usage(void **state)
{
	const char *too_fast[] = { "top", "--interval", "0.05", NULL };
	const char *unknown[] = { "top", "--bogus", NULL };
	const char *help[] = { "top", "--help", NULL };
	static struct run_result res;

	(void)state;
	run_moectl(daemon_.socket, too_fast, &res);
	ASSERT_EQ(exit_code(&res), 2);
	run_moectl(daemon_.socket, unknown, &res);
	ASSERT_EQ(exit_code(&res), 2);
	run_moectl(daemon_.socket, help, &res);
	ASSERT_EQ(exit_code(&res), 0);
	assert_non_null(strstr(res.out, "usage: moectl [--socket PATH] top"));
}

/* ---------------------------------------------------------------- a fake moed */

/* Hostile text in the model name and a peer's state; latency on layer 0 only. */
#define FAKE_STATUS(_uptime, _batches, _l0_tokens, _l1_tokens, _peer_out)                          \
	"{\"daemon\":{\"pid\":4242,\"uptime_s\":" #_uptime ",\"workers\":3},"                      \
	"\"model\":{\"name\":\"evil\\u001b[2J\\u001b]0;owned\\u0007\",\"layers\":2,"               \
	"\"max_experts\":4,\"d_model\":64},"                                                       \
	"\"totals\":{\"clients\":1,\"batches\":" #_batches ",\"tokens\":0,\"dropped\":0,"          \
	"\"errors\":0},"                                                                           \
	"\"layers\":[{\"layer\":0,\"experts\":4,\"batches\":0,\"tokens\":" #_l0_tokens ","         \
	"\"dropped\":0,\"tokens_per_expert\":[" #_l0_tokens ",0,0,0],"                             \
	"\"latency_us\":{\"p50\":123,\"p99\":4567,\"p999\":89012}},"                              \
	"{\"layer\":1,\"experts\":4,\"batches\":0,\"tokens\":" #_l1_tokens ",\"dropped\":0,"       \
	"\"tokens_per_expert\":[0,0,0," #_l1_tokens "]}],"                                         \
	"\"peers\":{\"peers\":[{\"name\":\"b\",\"state\":\"up\",\"tokens_out\":" #_peer_out ","    \
	"\"tokens_in\":0,\"calls_failed\":1},{\"name\":\"c\",\"state\":\"\\u001b[31mdown\","      \
	"\"tokens_out\":0,\"tokens_in\":0,\"calls_failed\":2}],\"served_by_us\":null}}"

static const char *const fake_samples[] = {
	FAKE_STATUS(10.0, 100, 40, 8, 1000),
	FAKE_STATUS(12.0, 300, 50, 8, 1600),
};

static int send_reply(int conn, const char *json)
{
	struct moe_status_reply rep = {
		.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_STATUS_REPLY, .size = sizeof(rep) },
		.json_size = strlen(json),
	};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control = { 0 };
	struct iovec iov = { .iov_base = &rep, .iov_len = sizeof(rep) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	int mfd = memfd_create("status", MFD_CLOEXEC), r;

	if (mfd < 0 || write(mfd, json, strlen(json)) != (ssize_t)strlen(json))
		return -1;
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &mfd, sizeof(int));
	r = sendmsg(conn, &mh, MSG_NOSIGNAL) < 0 ? -1 : 0;
	close(mfd);
	return r;
}

/* A child that answers every STATUS on @path with the next sample (the last one again). */
static pid_t fake_moed_start(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	pid_t pid;

	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	pid = test_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (size_t k = 0;; k++) {
			struct moe_status_request req;
			int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			size_t last = sizeof(fake_samples) / sizeof(fake_samples[0]) - 1;

			CHILD_CHECK(conn >= 0, "accept: %s", strerror(errno));
			CHILD_CHECK(read(conn, &req, sizeof(req)) == sizeof(req), "short request");
			CHILD_CHECK(req.hdr.type == MOE_MSG_STATUS, "type %u", req.hdr.type);
			CHILD_CHECK(send_reply(conn, fake_samples[k < last ? k : last]) == 0,
				    "reply: %s", strerror(errno));
			close(conn);
		}
	}
	close(lfd);
	return pid;
}

static void test_fake_moed(void **state)
{
	const char *top[] = { "top", "--batch", "--iterations", "2", "--interval", "0.1", NULL };
	static struct run_result res;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const char *frame2;
	pid_t fake;
	int st;

	(void)state;
	snprintf(path, sizeof(path), "%s/fake.sock", daemon_.dir);
	fake = fake_moed_start(path);
	run_moectl(path, top, &res);
	kill(fake, SIGKILL);
	ASSERT_OK(test_child_wait(fake, 10000, &st));
	ASSERT_EQ(exit_code(&res), 0);
	/* no escape sequence got through, and it says what was there */
	assert_plain_lines(res.out, 100);
	assert_non_null(strstr(res.out, "model evil\\x1b[2J\\x1b]0;owned\\x07: 2 layers"));
	frame2 = strstr(res.out, "\n\nmoed pid 4242");
	assert_non_null(frame2);
	/* 200 batches over the daemon's 2 s; layer 0's 10 tokens, layer 1's none */
	assert_non_null(strstr(frame2, "throughput: 100.0 batches/s"));
	assert_non_null(strstr(frame2, "\n    0        4        0.0        5.0        0.0          0"));
	assert_non_null(strstr(frame2, "\n    1        4        0.0        0.0        0.0          0"));
	/* latency: columns when a layer has it, "-" for the one without */
	assert_non_null(strstr(res.out, "p50 us     p99 us    p999 us"));
	assert_non_null(strstr(res.out, "        123       4567      89012"));
	assert_non_null(strstr(res.out, "          -          -          -"));
	/* peers: out 600 tokens over 2 s, states counted, failures summed */
	assert_non_null(strstr(res.out, "peers: 2, 1 up; out - tokens/s"));
	assert_non_null(strstr(frame2, "peers: 2, 1 up; out 300.0 tokens/s, in 0.0 tokens/s; "
				       "3 calls failed"));
	/* one hot expert per layer: the top of the heat ramp, the rest blank */
	assert_non_null(strstr(res.out, "    0 |@   |"));
	assert_non_null(strstr(res.out, "    1 |   @|"));
	/* the second frame: layer 0's expert 0 got 10 tokens, layer 1 none */
	assert_non_null(strstr(frame2, "  e0           10 #"));
	assert_non_null(strstr(frame2, "  e3            0 \n"));
}

static int setup(void **state)
{
	(void)state;
	return test_daemon_init(&daemon_, arg_moed);
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
		cmocka_unit_test_setup_teardown(test_batch_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nobody_serves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_moed, setup, teardown),
	};

	if (argc < 3) {
		fprintf(stderr, "usage: %s MOED MOECTL\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	arg_moectl = argv[2];
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
