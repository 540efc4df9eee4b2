/* SPDX-License-Identifier: MIT */
/*
 * Tests of the UCX transport: two transports in one process talking over
 * real TCP on 127.0.0.1 (UCX_TLS=tcp, set before the first one is made),
 * each driven by the event loop transport.h prescribes (progress until idle,
 * arm, poll the event fds). Every wait is bounded: a condition that does not
 * come true within 10 s fails the test instead of hanging it.
 *
 * Covered: listening on port 0, connect/accept, a small message and an
 * 8 MiB one (rendezvous: transport_recv returns 1, then on_recv_done), a
 * reply on the accepted connection, data the handler leaves (dropped, the
 * sender completes, the next message still arrives), a refused connect, the
 * server vanishing under an in-flight send and under an in-flight receive,
 * close with a send in flight, close from inside a handler, 40 connections
 * between one pair routed right before and after half of them are replaced,
 * refusals of bad calls, and the status mapping. No test leaves an fd open.
 */
#include "test_assert.h"
#include "test_fds.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "transport.h"
#include "transport_ucx_status.h"

#define WAIT_NS      10000000000ull /* any one wait */
#define BIG_BYTES    (8u << 20)     /* well above UCX's rendezvous threshold */
#define SMALL_BYTES  100u
#define LOCALHOST    "127.0.0.1"
#define MSG_LOG      64
#define MANY         40 /* connections between one client and one server */

/* ---------------------------------------------------------------- helpers */

/* One transport and what its handlers saw. */
struct side {
	struct transport *t;
	uint32_t seq; /* every handler call, numbered */

	uint32_t n_connected, connected_conn;
	uint32_t n_accept, accept_conn;
	char accept_addr[64];
	uint32_t n_error, error_conn, error_seq;
	int error_status;
	uint32_t error_log[MSG_LOG]; /* every failed connection, in order */

	uint32_t n_msg, msg_conn;
	uint16_t msg_id;
	unsigned char msg_header[TRANSPORT_MAX_HEADER];
	size_t msg_header_len, msg_data_len;
	/* every message's connection and id, in order of arrival */
	uint32_t log_conn[MSG_LOG], log_id[MSG_LOG];
	/* on_message takes the data into buf (take) or leaves it */
	bool take;
	/* on_message then closes the connection, or frees another transport */
	bool close_on_message;
	struct side *free_on_message;
	unsigned char *buf;
	size_t buf_len;
	uint64_t recv_cookie;
	int recv_ret;

	uint32_t n_recv_done, recv_done_seq;
	uint64_t recv_done_cookie;
	int recv_done_status;

	uint32_t n_send_done, send_done_seq;
	uint64_t send_done_cookie;
	int send_done_status;
};

static void on_connected(void *ctx, uint32_t conn)
{
	struct side *s = ctx;

	s->seq++;
	s->n_connected++;
	s->connected_conn = conn;
}

static void on_accept(void *ctx, uint32_t conn, const char *remote_addr)
{
	struct side *s = ctx;

	s->seq++;
	s->n_accept++;
	s->accept_conn = conn;
	snprintf(s->accept_addr, sizeof(s->accept_addr), "%s", remote_addr);
}

static void on_conn_error(void *ctx, uint32_t conn, int status)
{
	struct side *s = ctx;

	if (s->n_error < MSG_LOG)
		s->error_log[s->n_error] = conn;
	s->n_error++;
	s->error_seq = ++s->seq;
	s->error_conn = conn;
	s->error_status = status;
}

static void on_message(void *ctx, uint32_t conn, const struct transport_msg *m,
		       struct transport_rx *rx)
{
	struct side *s = ctx;

	s->seq++;
	s->n_msg++;
	s->msg_conn = conn;
	s->msg_id = m->id;
	s->msg_header_len = m->header_len;
	if (m->header_len <= sizeof(s->msg_header))
		memcpy(s->msg_header, m->header, m->header_len);
	s->msg_data_len = m->data_len;
	if (s->n_msg <= MSG_LOG) {
		s->log_conn[s->n_msg - 1] = conn;
		s->log_id[s->n_msg - 1] = m->id;
	}
	s->recv_ret = -ENODATA; /* "not taken" */
	if (s->take && m->data_len > s->buf_len)
		s->recv_ret = -ENOSPC; /* the test's buffer is too small: fails below */
	else if (s->take)
		s->recv_ret = transport_recv(s->t, rx, s->buf, m->data_len, s->recv_cookie);
	if (s->close_on_message)
		transport_close(s->t, conn);
	if (s->free_on_message) {
		struct side *other = s->free_on_message;

		s->free_on_message = NULL;
		other->t = transport_free(other->t);
	}
}

static void on_send_done(void *ctx, uint64_t cookie, int status)
{
	struct side *s = ctx;

	s->n_send_done++;
	s->send_done_seq = ++s->seq;
	s->send_done_cookie = cookie;
	s->send_done_status = status;
}

static void on_recv_done(void *ctx, uint64_t cookie, int status)
{
	struct side *s = ctx;

	s->recv_done_seq = ++s->seq;
	s->n_recv_done++;
	s->recv_done_cookie = cookie;
	s->recv_done_status = status;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Every side made from now on sends eagerly only (transport_ucx_opts.eager_only). */
static bool eager_only;

static void side_new(struct side *s)
{
	const struct transport_handlers h = {
		.ctx = s,
		.on_connected = on_connected,
		.on_accept = on_accept,
		.on_conn_error = on_conn_error,
		.on_message = on_message,
		.on_send_done = on_send_done,
		.on_recv_done = on_recv_done,
	};
	char why[256];

	const struct transport_ucx_opts o = { .eager_only = eager_only };

	memset(s, 0, sizeof(*s));
	if (transport_ucx_new_opts(&o, &h, &s->t, why, sizeof(why)) < 0)
		fail_msg("transport_ucx_new: %s", why);
	ASSERT_OK(transport_event_fd(s->t));
}

static void side_free(struct side *s)
{
	s->t = transport_free(s->t);
	free(s->buf);
	s->buf = NULL;
}

/* Progress both sides (either may be gone: t NULL) until both are idle. */
static void progress_both(struct side *a, struct side *b)
{
	int n;

	do {
		n = 0;
		if (a->t)
			n += transport_progress(a->t);
		if (b && b->t)
			n += transport_progress(b->t);
	} while (n > 0);
}

/*
 * Arm both sides and sleep on their fds until one is readable; returns at
 * once when one has events pending. Fails the test past @deadline.
 */
static void wait_both(struct side *a, struct side *b, uint64_t deadline, const char *what)
{
	struct side *sides[2] = { a, b };
	struct pollfd pfd[2];
	nfds_t n = 0;
	uint64_t now = now_ns();

	if (now >= deadline)
		fail_msg("timed out after 10 s waiting for %s", what);
	for (int i = 0; i < 2; i++) {
		int r;

		if (!sides[i] || !sides[i]->t)
			continue;
		r = transport_arm(sides[i]->t);
		if (r == -EAGAIN)
			return;
		ASSERT_OK(r);
		pfd[n].fd = transport_event_fd(sides[i]->t);
		pfd[n++].events = POLLIN;
	}
	/* no tick: a wake-up the transport forgets shows as a timeout */
	ASSERT_OK(poll(pfd, n, (int)((deadline - now) / 1000000 + 1)));
}

/* Drive @a and @b (NULL: only @a) until @cond holds, at most WAIT_NS. */
#define PUMP_UNTIL(_a, _b, _cond)                                                             \
	do {                                                                                  \
		uint64_t _deadline = now_ns() + WAIT_NS;                                      \
		for (;;) {                                                                    \
			progress_both((_a), (_b));                                            \
			if (_cond)                                                            \
				break;                                                        \
			wait_both((_a), (_b), _deadline, #_cond);                             \
		}                                                                             \
	} while (0)

static void fill(unsigned char *p, size_t n, uint64_t seed)
{
	uint64_t x = seed | 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)x;
	}
}

static unsigned char *filled(size_t n, uint64_t seed)
{
	unsigned char *p = malloc(n);

	assert_non_null(p);
	fill(p, n, seed);
	return p;
}

/* A server listening on 127.0.0.1 and a client connected to it. */
struct pair {
	int fds; /* open before the pair was made: as many must be open after */
	struct side srv, cli;
	uint16_t port;
	uint32_t cli_conn;
};

static int pair_setup(void **state)
{
	struct pair *p = calloc(1, sizeof(*p));

	if (!p)
		return -1;
	p->fds = test_count_open_fds();
	side_new(&p->srv);
	side_new(&p->cli);
	ASSERT_OK(transport_listen(p->srv.t, LOCALHOST, 0, &p->port));
	ASSERT_OK(transport_connect(p->cli.t, LOCALHOST, p->port, &p->cli_conn));
	PUMP_UNTIL(&p->cli, &p->srv, p->cli.n_connected == 1 && p->srv.n_accept == 1);
	ASSERT_EQ(p->cli.connected_conn, p->cli_conn);
	*state = p;
	return 0;
}

static int pair_teardown(void **state)
{
	struct pair *p = *state;
	int fds = p->fds;

	side_free(&p->cli);
	side_free(&p->srv);
	free(p);
	if (test_count_open_fds() != fds) {
		print_error("fd leak: %d open before the test, %d after\n", fds,
			    test_count_open_fds());
		return -1;
	}
	return 0;
}

/* A port on 127.0.0.1 that nothing listens on (bound once, then released). */
static uint16_t unused_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ASSERT_OK(fd);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_OK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)));
	ASSERT_OK(getsockname(fd, (struct sockaddr *)&sin, &len));
	close(fd);
	return ntohs(sin.sin_port);
}

/* ------------------------------------------------------------------ tests */

static void test_listen_any_port(void **state)
{
	struct side s;
	uint16_t port = 0;

	(void)state;
	side_new(&s);
	ASSERT_ERRNO(transport_listen(s.t, "not-an-address", 0, &port), EINVAL);
	ASSERT_OK(transport_listen(s.t, LOCALHOST, 0, &port));
	assert_true(port != 0);
	ASSERT_ERRNO(transport_listen(s.t, LOCALHOST, 0, NULL), EALREADY);
	side_free(&s);
}

static void test_connect_accept(void **state)
{
	struct pair *p = *state;

	/* pair_setup connected them; check what each side was told */
	ASSERT_EQ(p->cli.n_connected, 1);
	ASSERT_EQ(p->srv.n_accept, 1);
	ASSERT_EQ(p->srv.n_connected, 0);
	ASSERT_EQ(p->cli.n_accept, 0);
	assert_string_equal(p->srv.accept_addr, LOCALHOST);
	ASSERT_EQ(p->cli.n_error + p->srv.n_error, 0);
}

static void test_small_message(void **state)
{
	struct pair *p = *state;
	unsigned char header[24], *data = filled(SMALL_BYTES, 1);
	int r;

	fill(header, sizeof(header), 2);
	p->srv.take = true;
	p->srv.buf = malloc(SMALL_BYTES);
	p->srv.buf_len = SMALL_BYTES;
	r = transport_send(p->cli.t, p->cli_conn, 0xbeef, header, sizeof(header), data,
			   SMALL_BYTES, 7);
	ASSERT_OK(r);
	PUMP_UNTIL(&p->cli, &p->srv, p->srv.n_msg == 1 && (r == 0 || p->cli.n_send_done == 1));
	if (r == 1) {
		ASSERT_EQ(p->cli.send_done_cookie, 7);
		ASSERT_EQ(p->cli.send_done_status, 0);
	}
	ASSERT_EQ(p->srv.msg_conn, p->srv.accept_conn);
	ASSERT_EQ(p->srv.msg_id, 0xbeef);
	ASSERT_EQ(p->srv.msg_header_len, sizeof(header));
	assert_memory_equal(p->srv.msg_header, header, sizeof(header));
	ASSERT_EQ(p->srv.msg_data_len, SMALL_BYTES);
	ASSERT_EQ(p->srv.recv_ret, 0); /* eager: the data is there already */
	assert_memory_equal(p->srv.buf, data, SMALL_BYTES);
	ASSERT_EQ(p->srv.n_recv_done, 0);
	free(data);
}

static void test_large_message_and_reply(void **state)
{
	struct pair *p = *state;
	unsigned char *data = filled(BIG_BYTES, 3), *back = filled(SMALL_BYTES, 4);
	uint32_t header = 0x01020304;
	int r;

	p->srv.take = true;
	p->srv.buf = calloc(1, BIG_BYTES);
	p->srv.buf_len = BIG_BYTES;
	p->srv.recv_cookie = 99;
	r = transport_send(p->cli.t, p->cli_conn, 3, &header, sizeof(header), data, BIG_BYTES, 11);
	ASSERT_EQ(r, 1); /* 8 MiB cannot have left at once */
	PUMP_UNTIL(&p->cli, &p->srv,
		   (eager_only ? p->srv.n_msg == 1 : p->srv.n_recv_done == 1) &&
			   p->cli.n_send_done == 1);
	ASSERT_EQ(p->srv.n_msg, 1);
	ASSERT_EQ(p->srv.msg_id, 3);
	ASSERT_EQ(p->srv.msg_data_len, BIG_BYTES);
	assert_memory_equal(p->srv.msg_header, &header, sizeof(header));
	/* rendezvous: the data comes after the header; eager only: with it */
	ASSERT_EQ(p->srv.recv_ret, eager_only ? 0 : 1);
	if (!eager_only) {
		ASSERT_EQ(p->srv.recv_done_cookie, 99);
		ASSERT_EQ(p->srv.recv_done_status, 0);
	}
	assert_memory_equal(p->srv.buf, data, BIG_BYTES);
	ASSERT_EQ(p->cli.send_done_cookie, 11);
	ASSERT_EQ(p->cli.send_done_status, 0);

	/* the answer goes back on the accepted connection */
	p->cli.take = true;
	p->cli.buf = malloc(SMALL_BYTES);
	p->cli.buf_len = SMALL_BYTES;
	r = transport_send(p->srv.t, p->srv.accept_conn, 4, NULL, 0, back, SMALL_BYTES, 12);
	ASSERT_OK(r);
	PUMP_UNTIL(&p->cli, &p->srv, p->cli.n_msg == 1 && (r == 0 || p->srv.n_send_done == 1));
	ASSERT_EQ(p->cli.msg_conn, p->cli_conn);
	ASSERT_EQ(p->cli.msg_id, 4);
	ASSERT_EQ(p->cli.msg_header_len, 0);
	ASSERT_EQ(p->cli.recv_ret, 0);
	assert_memory_equal(p->cli.buf, back, SMALL_BYTES);
	free(data);
	free(back);
}

/* The same 8 MiB and its answer with eager_only: whole in on_message, taken at once. */
static void test_large_message_eager_only(void **state)
{
	eager_only = true;
	if (pair_setup(state) < 0)
		fail_msg("pair_setup");
	test_large_message_and_reply(state);
	eager_only = false;
	if (pair_teardown(state) < 0)
		fail_msg("pair_teardown");
}

static void test_data_left_is_dropped(void **state)
{
	struct pair *p = *state;
	unsigned char *big = filled(BIG_BYTES, 5), *small = filled(SMALL_BYTES, 6);
	int r;

	/* a rendezvous message and an eager one whose data the handler leaves */
	p->srv.take = false;
	ASSERT_EQ(transport_send(p->cli.t, p->cli_conn, 1, NULL, 0, big, BIG_BYTES, 21), 1);
	PUMP_UNTIL(&p->cli, &p->srv, p->srv.n_msg == 1 && p->cli.n_send_done == 1);
	ASSERT_EQ(p->srv.msg_data_len, BIG_BYTES);
	ASSERT_EQ(p->cli.send_done_cookie, 21);
	ASSERT_EQ(p->cli.send_done_status, 0); /* delivered; the receiver chose to drop it */
	r = transport_send(p->cli.t, p->cli_conn, 2, NULL, 0, small, SMALL_BYTES, 22);
	ASSERT_OK(r);
	PUMP_UNTIL(&p->cli, &p->srv, p->srv.n_msg == 2 && (r == 0 || p->cli.n_send_done == 2));
	ASSERT_EQ(p->srv.msg_id, 2);

	/* the connection still works: the next one is taken whole */
	p->srv.take = true;
	p->srv.buf = malloc(SMALL_BYTES);
	p->srv.buf_len = SMALL_BYTES;
	fill(small, SMALL_BYTES, 7);
	r = transport_send(p->cli.t, p->cli_conn, 3, NULL, 0, small, SMALL_BYTES, 23);
	ASSERT_OK(r);
	PUMP_UNTIL(&p->cli, &p->srv, p->srv.n_msg == 3);
	ASSERT_EQ(p->srv.msg_id, 3);
	ASSERT_EQ(p->srv.recv_ret, 0);
	assert_memory_equal(p->srv.buf, small, SMALL_BYTES);
	ASSERT_EQ(p->srv.n_error + p->cli.n_error, 0);
	free(big);
	free(small);
}

static void test_connect_refused(void **state)
{
	struct side s;
	uint32_t conn;

	(void)state;
	side_new(&s);
	ASSERT_OK(transport_connect(s.t, LOCALHOST, unused_port(), &conn));
	PUMP_UNTIL(&s, NULL, s.n_error == 1);
	ASSERT_EQ(s.error_conn, conn);
	assert_true(s.error_status < 0);
	ASSERT_EQ(s.n_connected, 0);
	ASSERT_ERRNO(transport_send(s.t, conn, 1, NULL, 0, NULL, 0, 0), ENOTCONN);
	transport_close(s.t, conn);
	side_free(&s);
}

static void test_server_gone(void **state)
{
	struct pair *p = *state;
	unsigned char *big = filled(BIG_BYTES, 8);

	/* the server never progresses again: the rendezvous cannot finish */
	ASSERT_EQ(transport_send(p->cli.t, p->cli_conn, 1, NULL, 0, big, BIG_BYTES, 31), 1);
	side_free(&p->srv);
	PUMP_UNTIL(&p->cli, NULL, p->cli.n_error == 1);
	ASSERT_EQ(p->cli.error_conn, p->cli_conn);
	assert_true(p->cli.error_status < 0);
	/* the send in flight finished first, with an error */
	ASSERT_EQ(p->cli.n_send_done, 1);
	ASSERT_EQ(p->cli.send_done_cookie, 31);
	assert_true(p->cli.send_done_status < 0);
	assert_true(p->cli.send_done_seq < p->cli.error_seq);
	ASSERT_ERRNO(transport_send(p->cli.t, p->cli_conn, 1, NULL, 0, NULL, 0, 0), ENOTCONN);
	transport_close(p->cli.t, p->cli_conn);
	ASSERT_ERRNO(transport_send(p->cli.t, p->cli_conn, 1, NULL, 0, NULL, 0, 0), ENOTCONN);
	free(big);
}

static void test_close_with_send_in_flight(void **state)
{
	struct pair *p = *state;
	unsigned char *big = filled(BIG_BYTES, 9);

	ASSERT_EQ(transport_send(p->cli.t, p->cli_conn, 1, NULL, 0, big, BIG_BYTES, 41), 1);
	transport_close(p->cli.t, p->cli_conn);
	ASSERT_EQ(p->cli.n_send_done, 0); /* not from inside transport_close() */
	ASSERT_ERRNO(transport_send(p->cli.t, p->cli_conn, 1, NULL, 0, NULL, 0, 0), ENOTCONN);
	transport_close(p->cli.t, p->cli_conn); /* twice: nothing */
	/* the send ends with an error; the server learns that its peer went */
	PUMP_UNTIL(&p->cli, &p->srv, p->cli.n_send_done == 1 && p->srv.n_error == 1);
	ASSERT_EQ(p->cli.send_done_cookie, 41);
	assert_true(p->cli.send_done_status < 0);
	ASSERT_EQ(p->cli.n_error, 0); /* closed by the daemon: no error for it */
	ASSERT_EQ(p->srv.error_conn, p->srv.accept_conn);
	assert_true(p->srv.error_status < 0);
	ASSERT_ERRNO(transport_send(p->srv.t, p->srv.accept_conn, 1, NULL, 0, NULL, 0, 0),
		     ENOTCONN);
	transport_close(p->srv.t, p->srv.accept_conn);
	free(big);
}

static void test_server_gone_under_receive(void **state)
{
	struct pair *p = *state;
	unsigned char *big = filled(BIG_BYTES, 10);

	/* the client starts taking 8 MiB from the server, which is gone right after */
	p->cli.take = true;
	p->cli.buf = malloc(BIG_BYTES);
	p->cli.buf_len = BIG_BYTES;
	p->cli.recv_cookie = 51;
	p->cli.free_on_message = &p->srv;
	ASSERT_EQ(transport_send(p->srv.t, p->srv.accept_conn, 1, NULL, 0, big, BIG_BYTES, 52), 1);
	PUMP_UNTIL(&p->cli, &p->srv, p->cli.n_error == 1);
	assert_null(p->srv.t);
	ASSERT_EQ(p->cli.recv_ret, 1);
	/* the receive in flight finished first, with an error */
	ASSERT_EQ(p->cli.n_recv_done, 1);
	ASSERT_EQ(p->cli.recv_done_cookie, 51);
	assert_true(p->cli.recv_done_status < 0);
	assert_true(p->cli.recv_done_seq < p->cli.error_seq);
	assert_true(p->cli.error_status < 0);
	transport_close(p->cli.t, p->cli_conn);
	free(big);
}

static void test_close_from_handler(void **state)
{
	struct pair *p = *state;
	unsigned char small[SMALL_BYTES] = { 1 };

	/* the server closes the connection from inside its message's handler */
	p->srv.close_on_message = true;
	ASSERT_OK(transport_send(p->cli.t, p->cli_conn, 9, NULL, 0, small, sizeof(small), 61));
	PUMP_UNTIL(&p->cli, &p->srv, p->srv.n_msg == 1 && p->cli.n_error == 1);
	ASSERT_EQ(p->srv.msg_id, 9);
	ASSERT_EQ(p->cli.error_conn, p->cli_conn);
	ASSERT_EQ(p->srv.n_error, 0);
	ASSERT_ERRNO(transport_send(p->srv.t, p->srv.accept_conn, 1, NULL, 0, NULL, 0, 0),
		     ENOTCONN);
	transport_close(p->cli.t, p->cli_conn);
}

/* Each client connection i sends id i; the server answers with the same id where it came. */
static void exchange_on_all(struct pair *p, const uint32_t *conns, uint32_t n)
{
	uint32_t srv_of[MANY];
	bool seen[MANY] = { false };

	p->srv.n_msg = p->cli.n_msg = 0;
	for (uint32_t i = 0; i < n; i++)
		ASSERT_OK(transport_send(p->cli.t, conns[i], (uint16_t)i, NULL, 0, NULL, 0, 0));
	PUMP_UNTIL(&p->cli, &p->srv, p->srv.n_msg == n);
	for (uint32_t k = 0; k < n; k++) {
		uint32_t i = p->srv.log_id[k];

		assert_true(i < n && !seen[i]);
		seen[i] = true;
		srv_of[i] = p->srv.log_conn[k];
		/* one server connection per client connection */
		for (uint32_t j = 0; j < k; j++)
			assert_true(p->srv.log_conn[j] != srv_of[i]);
	}
	for (uint32_t i = 0; i < n; i++)
		ASSERT_OK(transport_send(p->srv.t, srv_of[i], (uint16_t)i, NULL, 0, NULL, 0, 0));
	PUMP_UNTIL(&p->cli, &p->srv, p->cli.n_msg == n);
	for (uint32_t k = 0; k < n; k++)
		ASSERT_EQ(p->cli.log_conn[k], conns[p->cli.log_id[k]]);
}

static void test_many_connections(void **state)
{
	struct pair *p = *state;
	uint32_t conns[MANY];

	/* the pair's connection plus MANY - 1 more, all to the one server */
	conns[0] = p->cli_conn;
	for (uint32_t i = 1; i < MANY; i++)
		ASSERT_OK(transport_connect(p->cli.t, LOCALHOST, p->port, &conns[i]));
	PUMP_UNTIL(&p->cli, &p->srv, p->cli.n_connected == MANY && p->srv.n_accept == MANY);
	exchange_on_all(p, conns, MANY);

	/* close every other one, on both sides, then open them again */
	for (uint32_t i = 0; i < MANY; i += 2)
		transport_close(p->cli.t, conns[i]);
	PUMP_UNTIL(&p->cli, &p->srv, p->srv.n_error == MANY / 2);
	for (uint32_t k = 0; k < MANY / 2; k++)
		transport_close(p->srv.t, p->srv.error_log[k]);
	for (uint32_t i = 0; i < MANY; i += 2)
		ASSERT_OK(transport_connect(p->cli.t, LOCALHOST, p->port, &conns[i]));
	PUMP_UNTIL(&p->cli, &p->srv,
		   p->cli.n_connected == MANY + MANY / 2 && p->srv.n_accept == MANY + MANY / 2);
	exchange_on_all(p, conns, MANY);
	ASSERT_EQ(p->cli.n_error, 0);
}

static void test_bad_calls(void **state)
{
	struct pair *p = *state;
	static unsigned char header[TRANSPORT_MAX_HEADER + 1];
	uint32_t conn;

	ASSERT_ERRNO(transport_send(p->cli.t, p->cli_conn, 1, header, sizeof(header), NULL, 0, 0),
		     EMSGSIZE);
	ASSERT_ERRNO(transport_send(p->cli.t, TRANSPORT_MAX_CONNS, 1, NULL, 0, NULL, 0, 0),
		     ENOTCONN);
	ASSERT_ERRNO(transport_send(p->cli.t, p->cli_conn, 1, NULL, 4, NULL, 0, 0), EINVAL);
	ASSERT_ERRNO(transport_connect(p->cli.t, LOCALHOST, 0, &conn), EINVAL);
	ASSERT_ERRNO(transport_connect(p->cli.t, "localhost", p->port, &conn), EINVAL);
	/* the largest header still goes, and arrives whole */
	p->srv.take = true;
	ASSERT_OK(transport_send(p->cli.t, p->cli_conn, 5, header, TRANSPORT_MAX_HEADER, NULL, 0,
				 0));
	PUMP_UNTIL(&p->cli, &p->srv, p->srv.n_msg == 1);
	ASSERT_EQ(p->srv.msg_header_len, TRANSPORT_MAX_HEADER);
	ASSERT_EQ(p->srv.msg_data_len, 0);
	ASSERT_EQ(p->srv.recv_ret, 0);
}

static void test_status_map(void **state)
{
	(void)state;
	ASSERT_EQ(transport_ucx_errno(UCS_OK), 0);
	ASSERT_EQ(transport_ucx_errno(UCS_ERR_NO_MEMORY), -ENOMEM);
	ASSERT_EQ(transport_ucx_errno(UCS_ERR_UNREACHABLE), -EHOSTUNREACH);
	ASSERT_EQ(transport_ucx_errno(UCS_ERR_CONNECTION_RESET), -ECONNRESET);
	ASSERT_EQ(transport_ucx_errno(UCS_ERR_ENDPOINT_TIMEOUT), -ETIMEDOUT);
	ASSERT_EQ(transport_ucx_errno(UCS_ERR_TIMED_OUT), -ETIMEDOUT);
	ASSERT_EQ(transport_ucx_errno(UCS_ERR_CANCELED), -ECANCELED);
	ASSERT_EQ(transport_ucx_errno(UCS_ERR_REJECTED), -ECONNREFUSED);
	ASSERT_EQ(transport_ucx_errno(UCS_ERR_MESSAGE_TRUNCATED), -EMSGSIZE);
	ASSERT_EQ(transport_ucx_errno(UCS_ERR_FIRST_LINK_FAILURE), -ENOLINK);
	ASSERT_EQ(transport_ucx_errno((ucs_status_t)(UCS_ERR_FIRST_ENDPOINT_FAILURE - 1)),
		  -ECONNRESET);
	ASSERT_EQ(transport_ucx_errno(UCS_ERR_SHMEM_SEGMENT), -EIO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_listen_any_port, fd_check_setup,
						fd_check_teardown),
		cmocka_unit_test_setup_teardown(test_connect_accept, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_small_message, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_large_message_and_reply, pair_setup,
						pair_teardown),
		cmocka_unit_test(test_large_message_eager_only),
		cmocka_unit_test_setup_teardown(test_data_left_is_dropped, pair_setup,
						pair_teardown),
		cmocka_unit_test_setup_teardown(test_connect_refused, fd_check_setup,
						fd_check_teardown),
		cmocka_unit_test_setup_teardown(test_server_gone, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_close_with_send_in_flight, pair_setup,
						pair_teardown),
		cmocka_unit_test_setup_teardown(test_server_gone_under_receive, pair_setup,
						pair_teardown),
		cmocka_unit_test_setup_teardown(test_close_from_handler, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_many_connections, pair_setup, pair_teardown),
		cmocka_unit_test_setup_teardown(test_bad_calls, pair_setup, pair_teardown),
		cmocka_unit_test(test_status_map),
	};

	/* real TCP between the two transports, not shared memory or loopback shortcuts */
	setenv("UCX_TLS", "tcp", 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
