/* SPDX-License-Identifier: MIT */
/*
 * A hostile client and good clients on one real moed at the same time.
 *
 * The hostile clients do not use libmoe: they say HELLO themselves on the
 * control socket (moe_proto.h), take the memfds from SCM_RIGHTS, map them
 * with shm_region_attach() and write SQEs and ring words directly. The good
 * clients are a process that runs verified moe_forward()s in a loop for the
 * whole test, and a libmoe client in the test process that runs one
 * verified forward between every hostile step.
 *
 *   - Every malformed SQE (bad opcode, out-of-arena, wrapping and misaligned
 *     offsets, token counts 0 and huge, layers out of range, reserved bits
 *     and unknown flags, inconsistent routing fields, given routing naming
 *     experts that do not exist or with NaN weights, NaN and Inf inputs)
 *     completes with its user_data and -EINVAL or -EDOM, writes nothing to
 *     its output buffer, and moed keeps serving; valid edge cases (the last
 *     rows of the arena, input and output in the same buffer, given routing,
 *     a NOP with garbage in its other fields) complete with 0 and the right
 *     result. Then all of them again in one burst: each completes exactly
 *     once with its own status.
 *   - Hostile seq words (moe_abi.h "Rings"): an SQE whose seq names a later
 *     lap, the previous lap or junk is not taken (no CQE), the right seq
 *     gets exactly one CQE, and a consumed slot marked ready again gets
 *     none. Marking every SQ slot ready lap after lap while never reaping
 *     takes exactly as many SQEs as the CQ holds, overwrites no CQE, and
 *     the rest is taken once the client reaps (and rings, when moed asked).
 *   - A CQ head moved past moed's tail disconnects that client: its socket
 *     sees EOF, totals.clients_corrupt counts it.
 *   - A scribbled SQ head (moed's index) changes nothing: moed keeps its own.
 *   - A message on the session socket after HELLO ends the session.
 *   - HELLOs with impossible sizes or another ABI are refused with -errno
 *     and no fds.
 *   - Through all of it the good clients get correct results, and moed exits
 *     0 on SIGTERM.
 *
 * Runs with the futex (auto) and the eventfd doorbell. A third case: a
 * connection that never says HELLO is closed after hello_timeout_ms (the
 * client sees EOF) and moed goes on serving.
 *
 * And a hostile name: a raw client whose HELLO name holds a newline and
 * "<0>", an ESC sequence and a byte that is not UTF-8. moed's status JSON
 * lists it under the escaped name, and moed's log (captured in a file for
 * this case) has no forged priority-0 line and no raw ESC byte. Before it, a
 * HELLO of the previous ABI major is refused (-EPROTONOSUPPORT, the reply
 * carrying moed's major) and moed's log names both versions.
 *
 * usage: it_hostile_client MOED [MOECTL]
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moe.h>

#include "moe_abi.h"
#include "moe_proto.h"
#include "shm_atomic.h"
#include "shm_region.h"
#include "shm_ring.h"
#include "test_daemon.h"
#include "test_fds.h"

#define ATOL              1e-4
#define RTOL              1e-4
#define TIE_MARGIN        1e-3
#define CQE_TIMEOUT_MS    20000
#define HANGUP_TIMEOUT_MS 10000
#define ARENA_BYTES       (4u << 20)
#define T_CASE            4 /* tokens of the hostile SQEs */
#define MAX_T_GOOD        32

static const char *arg_moed;
static struct test_daemon daemon_;

struct good_report {
	uint64_t forwards, tokens, ties;
	int finished;
};
static struct good_report *good_rep; /* MAP_SHARED */

/* ---------------------------------------------------------------- a client without libmoe */

struct raw_client {
	int sock;
	int doorbell_fd; /* eventfd doorbell, or -1: futex */
	struct shm_region region;
	struct shm_ring sq, cq;
	uint32_t client_id;
	uint16_t daemon_abi_major; /* the HELLO reply's, refused or not */
};

/* A new connection to moed's control socket. */
static int ctl_connect(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	memcpy(sa.sun_path, daemon_.socket, sizeof(daemon_.socket));
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	ASSERT_OK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
	return fd;
}

/*
 * HELLO on a new connection; the reply's status (0 or the daemon's -errno).
 * On 0 the region is mapped and the rings set up.
 */
static int raw_hello(struct raw_client *rc, const struct moe_hello *hello)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} control;
	struct moe_hello_reply reply;
	struct iovec iov = {.iov_base = &reply, .iov_len = sizeof(reply)};
	struct msghdr mh = {.msg_iov = &iov,
	                    .msg_iovlen = 1,
	                    .msg_control = control.buf,
	                    .msg_controllen = sizeof(control.buf)};
	int fds[4] = {-1, -1, -1, -1};
	unsigned n_fds = 0;
	ssize_t n;

	memset(rc, 0, sizeof(*rc));
	rc->doorbell_fd = -1;
	rc->region.info_fd = rc->region.ring_fd = -1;
	rc->sock = ctl_connect();
	ASSERT_EQ(send(rc->sock, hello, sizeof(*hello), MSG_NOSIGNAL), sizeof(*hello));
	n = recvmsg(rc->sock, &mh, MSG_CMSG_CLOEXEC);
	ASSERT_EQ(n, sizeof(reply));
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int) && n_fds < 4; i++)
			memcpy(&fds[n_fds++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
	}
	ASSERT_EQ(reply.hdr.magic, MOE_PROTO_MAGIC);
	ASSERT_EQ(reply.hdr.type, MOE_MSG_HELLO_REPLY);
	rc->daemon_abi_major = reply.abi_major;
	if (reply.status != 0) {
		ASSERT_EQ(n_fds, 0); /* a refusal carries no fds */
		close(rc->sock);
		rc->sock = -1;
		return reply.status;
	}
	ASSERT_EQ(reply.n_fds, n_fds);
	assert_true(n_fds == 2 || n_fds == 3);
	ASSERT_OK(shm_region_attach(fds[0], fds[1], NULL, &rc->region));
	if (n_fds == 3) {
		assert_true(rc->region.info.flags & MOE_REGION_F_EVENTFD_DOORBELL);
		rc->doorbell_fd = fds[2];
	}
	ASSERT_OK(shm_ring_init(&rc->sq, rc->region.sq_ctl, rc->region.sqes,
	                        rc->region.info.sq_entries, sizeof(struct moe_sqe), 0));
	ASSERT_OK(shm_ring_init(&rc->cq, rc->region.cq_ctl, rc->region.cqes,
	                        rc->region.info.cq_entries, sizeof(struct moe_cqe), 0));
	rc->client_id = reply.client_id;
	return 0;
}

static void hello_init(struct moe_hello *h, const char *name)
{
	*h = (struct moe_hello){
	    .hdr = {.magic = MOE_PROTO_MAGIC, .type = MOE_MSG_HELLO, .size = sizeof(*h)},
	    .abi_major = MOE_ABI_MAJOR,
	    .abi_minor = MOE_ABI_MINOR,
	    .sq_entries = 64,
	    .cq_entries = 128,
	    .arena_size = ARENA_BYTES,
	};
	snprintf(h->name, sizeof(h->name), "%s", name);
}

static void raw_connect(struct raw_client *rc, const char *name)
{
	struct moe_hello h;

	hello_init(&h, name);
	ASSERT_OK(raw_hello(rc, &h));
}

static void raw_close(struct raw_client *rc)
{
	shm_region_done(&rc->region);
	if (rc->doorbell_fd >= 0)
		close(rc->doorbell_fd);
	if (rc->sock >= 0)
		close(rc->sock);
	rc->doorbell_fd = rc->sock = -1;
}

/* Wake moed whatever it sleeps on (an unneeded wake-up is harmless). */
static void raw_doorbell(struct raw_client *rc)
{
	const uint64_t one = 1;

	if (rc->doorbell_fd >= 0)
		ASSERT_EQ(write(rc->doorbell_fd, &one, sizeof(one)), sizeof(one));
	else
		shm_ring_wake_consumer(&rc->sq);
}

static void raw_push(struct raw_client *rc, const struct moe_sqe *sqe)
{
	assert_true(shm_ring_free_slots(&rc->sq, 1) > 0);
	shm_ring_write(&rc->sq, 0, sqe);
	shm_ring_publish(&rc->sq, 1);
	raw_doorbell(rc);
}

/* @n NOPs with user_data @first_ud, @first_ud + 1 ..., in one publish. */
static void raw_push_nops(struct raw_client *rc, uint32_t n, uint64_t first_ud)
{
	ASSERT_EQ(shm_ring_free_slots(&rc->sq, n), n);
	for (uint32_t i = 0; i < n; i++) {
		struct moe_sqe q = {.user_data = first_ud + i, .opcode = MOE_OP_NOP};

		shm_ring_write(&rc->sq, i, &q);
	}
	shm_ring_publish(&rc->sq, n);
	raw_doorbell(rc);
}

/* Wait until at least @n CQEs are ready (polled, not reaped); returns how many are. */
static uint32_t raw_wait_ready(struct raw_client *rc, uint32_t n, int timeout_ms)
{
	int64_t deadline = test_now_ns() + (int64_t)timeout_ms * 1000000;
	uint32_t got;

	while ((got = shm_ring_peek(&rc->cq, UINT32_MAX)) < n && test_now_ns() < deadline)
		usleep(200);
	return got;
}

/* The next CQE, polled (moed's end of the protocol is what is under test). */
static void raw_wait_cqe(struct raw_client *rc, struct moe_cqe *ret)
{
	if (raw_wait_ready(rc, 1, CQE_TIMEOUT_MS) == 0)
		fail_msg("no CQE from moed within %d ms", CQE_TIMEOUT_MS);
	shm_ring_copy_out(&rc->cq, 0, ret);
	shm_ring_consume_release(&rc->cq, 1);
}

/* Has moed closed the session socket? (No wait.) */
static bool raw_hung_up(struct raw_client *rc)
{
	struct pollfd p = {.fd = rc->sock, .events = POLLIN | POLLRDHUP};

	return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR));
}

/* Wait until moed closes the session socket: EOF (or a reset). */
static void raw_expect_hangup(struct raw_client *rc, const char *what)
{
	struct pollfd p = {.fd = rc->sock, .events = POLLIN | POLLRDHUP};
	char byte;
	int r = poll(&p, 1, HANGUP_TIMEOUT_MS);

	if (r <= 0)
		fail_msg("%s: moed did not disconnect the client within %d ms", what,
		         HANGUP_TIMEOUT_MS);
	r = (int)recv(rc->sock, &byte, 1, MSG_DONTWAIT);
	if (r != 0 && !(r < 0 && errno == ECONNRESET))
		fail_msg("%s: the session socket is readable but not at EOF (%d)", what, r);
}

/* ---------------------------------------------------------------- the good clients */

struct good_client {
	struct moe_client *c;
	struct moe_model_info mi;
	float *x, *y;
	float ry[MAX_T_GOOD * 1024];
	uint64_t seed;
};

/* -errno, or 0 with the client connected and its buffers allocated. */
static int good_open(struct good_client *g, const char *name, uint64_t seed)
{
	struct moe_client_opts o;
	int r;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = name;
	o.arena_size = 1u << 20;
	g->seed = seed;
	g->mi.size = sizeof(g->mi);
	r = moe_connect(&o, &g->c);
	if (r < 0)
		return r;
	r = moe_model_info_get(g->c, &g->mi);
	if (r < 0 || g->mi.d_model > 1024)
		return r < 0 ? r : -E2BIG;
	r = moe_buf_alloc(g->c, (size_t)MAX_T_GOOD * g->mi.d_model * 4, (void **)&g->x);
	if (r < 0)
		return r;
	return moe_buf_alloc(g->c, (size_t)MAX_T_GOOD * g->mi.d_model * 4, (void **)&g->y);
}

static void good_close(struct good_client *g)
{
	moe_buf_free(g->c, g->x);
	moe_buf_free(g->c, g->y);
	moe_close(g->c);
}

/*
 * One forward checked against @ref: 0, or a negative number after printing
 * what went wrong. Near-tie tokens are counted into *@ties, not compared.
 */
static int good_forward(struct good_client *g, struct test_ref *ref, uint64_t *ties)
{
	const uint32_t d = g->mi.d_model;
	uint32_t T = 1 + (uint32_t)(g->seed % MAX_T_GOOD), layer = (uint32_t)(g->seed >> 8) % 2;
	struct moe_request rq;
	struct moe_completion done;
	int r;

	test_fill_normal(g->x, (size_t)T * d, &g->seed);
	memset(g->y, 0xff, (size_t)T * d * 4);
	moe_request_init(&rq);
	rq.user_data = g->seed;
	rq.layer = layer % g->mi.n_layers;
	rq.n_tokens = T;
	rq.input = g->x;
	rq.output = g->y;
	r = moe_forward(g->c, &rq, &done);
	if (r < 0) {
		fprintf(stderr, "good client: moe_forward: %s\n", moe_strerror(r));
		return r;
	}
	if (done.status != 0 || done.user_data != rq.user_data) {
		fprintf(stderr, "good client: completion status %d, user_data %#llx\n", done.status,
		        (unsigned long long)done.user_data);
		return -EPROTO;
	}
	r = test_ref_forward(ref, rq.layer, g->x, T, NULL, NULL, 0, g->ry, NULL, NULL, NULL);
	if (r < 0)
		return r;
	for (uint32_t t = 0; t < T; t++) {
		if (test_ref_route_margin(ref, rq.layer, g->x + (size_t)t * d) < TIE_MARGIN) {
			(*ties)++;
			continue;
		}
		if (test_count_mismatches("good client output", g->y + (size_t)t * d,
		                          g->ry + (size_t)t * d, d, ATOL, RTOL))
			return -EPROTO;
	}
	return 0;
}

/* The good client process: verified forwards until @stop_fd reaches EOF. */
static void __attribute__((noreturn)) good_child(int stop_fd)
{
	static struct good_client g;
	struct test_ref ref;
	struct pollfd p = {.fd = stop_fd, .events = POLLIN};

	alarm(240);
	CHILD_OK(good_open(&g, "it-good-child", 0x600d));
	CHILD_OK(test_ref_open(&ref, daemon_.model_path));
	while (poll(&p, 1, 0) == 0) {
		CHILD_OK(good_forward(&g, &ref, &good_rep->ties));
		good_rep->forwards++;
	}
	good_close(&g);
	test_ref_close(&ref);
	good_rep->finished = 1;
	exit(0);
}

/* ---------------------------------------------------------------- the hostile SQEs */

/*
 * Arena layout of the hostile client: each case's buffers from case_base
 * (0 when the cases run one by one; a block of its own per case in the
 * burst, so that one case's input is not another's).
 */
static uint64_t case_base;
#define CASE_BLOCK (32u << 10)
#define BURST_BASE (512u << 10)
#define X_OFF      (case_base + 0)
#define Y_OFF      (case_base + (8u << 10))
#define R_OFF      (case_base + (16u << 10))
#define W_OFF      (case_base + (20u << 10))
#define C_OFF      (case_base + (24u << 10))

enum fill {
	FILL_NONE,
	FILL_NAN,        /* a NaN in the input rows */
	FILL_INF,        /* +Inf in the input rows */
	FILL_GIVEN_OK,   /* valid given routing */
	FILL_GIVEN_E,    /* expert index == the layer's expert count */
	FILL_GIVEN_BIG,  /* INT32_MAX */
	FILL_GIVEN_NEG,  /* -2 */
	FILL_GIVEN_MIN,  /* INT32_MIN */
	FILL_GIVEN_NANW, /* NaN weight */
	FILL_ARENA_END,  /* input at the very end of the arena (valid) */
	FILL_SAME_BUF,   /* output over the input (valid) */
};

struct sqe_case {
	const char *name;
	int expect; /* CQE status */
	enum fill fill;
	void (*edit)(struct moe_sqe *q, const struct moe_region_info *info);
};

#define EDIT(_name, ...)                                                                           \
	static void _name(struct moe_sqe *q, const struct moe_region_info *info)                   \
	{                                                                                          \
		(void)info;                                                                        \
		__VA_ARGS__;                                                                       \
	}

EDIT(e_none, (void)q)
EDIT(e_opcode2, q->opcode = 2)
EDIT(e_opcode255, q->opcode = 255)
EDIT(e_in_at_end, q->in_off = info->arena_size)
EDIT(e_in_overrun, q->in_off = info->arena_size - MOE_ARENA_ALIGN)
EDIT(e_in_just_over, q->in_off = info->arena_size - (uint64_t)T_CASE * info->d_model * 4 + 64)
EDIT(e_out_past, q->out_off = info->arena_size + MOE_ARENA_ALIGN)
EDIT(e_in_max, q->in_off = UINT64_MAX & ~(uint64_t)(MOE_ARENA_ALIGN - 1))
EDIT(e_out_max, q->out_off = UINT64_MAX & ~(uint64_t)(MOE_ARENA_ALIGN - 1))
EDIT(e_in_wrap, q->in_off = (uint64_t)0 - (uint64_t)T_CASE * info->d_model * 4)
EDIT(e_in_misaligned, q->in_off = X_OFF + 4)
EDIT(e_out_misaligned, q->out_off = Y_OFF + 32)
EDIT(e_tokens0, q->n_tokens = 0)
EDIT(e_tokens_over, q->n_tokens = info->max_tokens + 1)
EDIT(e_tokens_max, q->n_tokens = UINT32_MAX)
EDIT(e_tokens_beyond_arena, q->n_tokens = info->max_tokens)
EDIT(e_layer_n, q->layer = info->n_layers)
EDIT(e_layer_max, q->layer = UINT16_MAX)
EDIT(e_reserved, q->reserved0 = 1)
EDIT(e_flag4, q->flags = 1u << 4)
EDIT(e_flag15, q->flags = 1u << 15)
EDIT(e_route_k_no_flag, q->route_k = 2)
EDIT(e_route_off_no_flag, q->route_off = R_OFF)
EDIT(e_counts_no_flag, q->counts_off = C_OFF)
EDIT(e_given_and_return, q->flags = MOE_SQE_F_ROUTE_GIVEN | MOE_SQE_F_ROUTE_RETURN; q->route_k = 2;
     q->route_off = R_OFF; q->weight_off = W_OFF)
EDIT(e_return_k0, q->flags = MOE_SQE_F_ROUTE_RETURN; q->route_off = R_OFF; q->weight_off = W_OFF)
EDIT(e_return_k_short, q->flags = MOE_SQE_F_ROUTE_RETURN; q->route_k = 1; q->route_off = R_OFF;
     q->weight_off = W_OFF)
EDIT(e_return_k_huge, q->flags = MOE_SQE_F_ROUTE_RETURN; q->route_k = UINT16_MAX;
     q->route_off = R_OFF; q->weight_off = W_OFF)
EDIT(e_return_route_max, q->flags = MOE_SQE_F_ROUTE_RETURN; q->route_k = 2;
     q->route_off = UINT64_MAX & ~63ull; q->weight_off = W_OFF)
EDIT(e_return_weight_misaligned, q->flags = MOE_SQE_F_ROUTE_RETURN; q->route_k = 2;
     q->route_off = R_OFF; q->weight_off = W_OFF + 8)
EDIT(e_given_k_over_experts, q->flags = MOE_SQE_F_ROUTE_GIVEN; q->route_k = info->max_experts + 1;
     q->route_off = R_OFF; q->weight_off = W_OFF)
EDIT(e_counts_max, q->flags = MOE_SQE_F_COUNTS_RETURN; q->counts_off = UINT64_MAX & ~63ull)
EDIT(e_counts_at_end, q->flags = MOE_SQE_F_COUNTS_RETURN; q->counts_off = info->arena_size)
EDIT(e_given, q->flags = MOE_SQE_F_ROUTE_GIVEN; q->route_k = 2; q->route_off = R_OFF;
     q->weight_off = W_OFF)
EDIT(e_arena_end, q->in_off = info->arena_size - (uint64_t)T_CASE * info->d_model * 4)
EDIT(e_same_buf, q->out_off = q->in_off)
EDIT(e_nop_garbage, q->opcode = MOE_OP_NOP; q->n_tokens = 0; q->layer = UINT16_MAX;
     q->in_off = UINT64_MAX)

static const struct sqe_case cases[] = {
    {"valid forward", 0, FILL_NONE, e_none},
    {"opcode 2", -EINVAL, FILL_NONE, e_opcode2},
    {"opcode 255", -EINVAL, FILL_NONE, e_opcode255},
    {"in_off = arena_size", -EINVAL, FILL_NONE, e_in_at_end},
    {"input overruns the arena", -EINVAL, FILL_NONE, e_in_overrun},
    {"input overruns the arena by 64 bytes", -EINVAL, FILL_NONE, e_in_just_over},
    {"out_off past the arena", -EINVAL, FILL_NONE, e_out_past},
    {"in_off near UINT64_MAX", -EINVAL, FILL_NONE, e_in_max},
    {"out_off near UINT64_MAX", -EINVAL, FILL_NONE, e_out_max},
    {"in_off + length wraps to 0", -EINVAL, FILL_NONE, e_in_wrap},
    {"misaligned in_off", -EINVAL, FILL_NONE, e_in_misaligned},
    {"misaligned out_off", -EINVAL, FILL_NONE, e_out_misaligned},
    {"n_tokens 0", -EINVAL, FILL_NONE, e_tokens0},
    {"n_tokens max_tokens + 1", -EINVAL, FILL_NONE, e_tokens_over},
    {"n_tokens UINT32_MAX", -EINVAL, FILL_NONE, e_tokens_max},
    {"n_tokens max_tokens, beyond the arena", -EINVAL, FILL_NONE, e_tokens_beyond_arena},
    {"layer n_layers", -EINVAL, FILL_NONE, e_layer_n},
    {"layer UINT32_MAX", -EINVAL, FILL_NONE, e_layer_max},
    {"reserved0 set", -EINVAL, FILL_NONE, e_reserved},
    {"unknown flag 1 << 4", -EINVAL, FILL_NONE, e_flag4},
    {"unknown flag 1 << 15", -EINVAL, FILL_NONE, e_flag15},
    {"route_k without a ROUTE flag", -EINVAL, FILL_NONE, e_route_k_no_flag},
    {"route_off without a ROUTE flag", -EINVAL, FILL_NONE, e_route_off_no_flag},
    {"counts_off without COUNTS_RETURN", -EINVAL, FILL_NONE, e_counts_no_flag},
    {"ROUTE_GIVEN with ROUTE_RETURN", -EINVAL, FILL_NONE, e_given_and_return},
    {"ROUTE_RETURN route_k 0", -EINVAL, FILL_NONE, e_return_k0},
    {"ROUTE_RETURN route_k below the slots", -EINVAL, FILL_NONE, e_return_k_short},
    {"ROUTE_RETURN route_k UINT32_MAX", -EINVAL, FILL_NONE, e_return_k_huge},
    {"ROUTE_RETURN route_off near UINT64_MAX", -EINVAL, FILL_NONE, e_return_route_max},
    {"ROUTE_RETURN weight_off misaligned", -EINVAL, FILL_NONE, e_return_weight_misaligned},
    {"ROUTE_GIVEN route_k above the experts", -EINVAL, FILL_GIVEN_OK, e_given_k_over_experts},
    {"COUNTS_RETURN counts_off near UINT64_MAX", -EINVAL, FILL_NONE, e_counts_max},
    {"COUNTS_RETURN counts_off = arena_size", -EINVAL, FILL_NONE, e_counts_at_end},
    {"ROUTE_GIVEN expert = n_experts", -EINVAL, FILL_GIVEN_E, e_given},
    {"ROUTE_GIVEN expert INT32_MAX", -EINVAL, FILL_GIVEN_BIG, e_given},
    {"ROUTE_GIVEN expert -2", -EINVAL, FILL_GIVEN_NEG, e_given},
    {"ROUTE_GIVEN expert INT32_MIN", -EINVAL, FILL_GIVEN_MIN, e_given},
    {"ROUTE_GIVEN NaN weight", -EINVAL, FILL_GIVEN_NANW, e_given},
    {"NaN in the input", -EDOM, FILL_NAN, e_none},
    {"+Inf in the input", -EDOM, FILL_INF, e_none},
    {"valid given routing", 0, FILL_GIVEN_OK, e_given},
    {"input in the last rows of the arena", 0, FILL_ARENA_END, e_arena_end},
    {"output over the input", 0, FILL_SAME_BUF, e_same_buf},
    {"NOP with garbage fields", 0, FILL_NONE, e_nop_garbage},
};
#define N_CASES     (sizeof(cases) / sizeof(cases[0]))
#define CASE_UD(_i) (0xbad0000000000000ull | (uint64_t)(_i))

/* The hostile client's input rows for one case, and the expected result. */
struct case_data {
	float x[T_CASE * 1024];
	int32_t re[T_CASE * 2];
	float rw[T_CASE * 2];
	float ry[T_CASE * 1024];
};

static void *arena_at(struct raw_client *rc, uint64_t off)
{
	return rc->region.arena + off;
}

/* Write the case's buffers into the hostile arena; poison every output range. */
static void case_prepare(struct raw_client *rc, const struct sqe_case *sc, struct moe_sqe *q,
                         struct case_data *cd, uint64_t *seed)
{
	const struct moe_region_info *info = &rc->region.info;
	const uint32_t d = info->d_model, E = info->max_experts;
	const size_t rows = (size_t)T_CASE * d * 4;

	*q = (struct moe_sqe){.opcode = MOE_OP_FORWARD,
	                      .layer = 1,
	                      .n_tokens = T_CASE,
	                      .in_off = X_OFF,
	                      .out_off = Y_OFF};
	test_fill_normal(cd->x, (size_t)T_CASE * d, seed);
	for (uint32_t i = 0; i < T_CASE * 2; i++) {
		cd->re[i] = (int32_t)((i * 3 + 1) % E);
		cd->rw[i] = 0.25f + 0.125f * (float)(i % 4);
	}
	if (sc->fill == FILL_NAN)
		cd->x[d + 5] = NAN;
	if (sc->fill == FILL_INF)
		cd->x[2 * d + 7] = INFINITY;
	if (sc->fill == FILL_GIVEN_E)
		cd->re[3] = (int32_t)E;
	if (sc->fill == FILL_GIVEN_BIG)
		cd->re[5] = INT32_MAX;
	if (sc->fill == FILL_GIVEN_NEG)
		cd->re[1] = -2;
	if (sc->fill == FILL_GIVEN_MIN)
		cd->re[6] = INT32_MIN;
	if (sc->fill == FILL_GIVEN_NANW)
		cd->rw[2] = NAN;
	sc->edit(q, info);
	memcpy(arena_at(rc, X_OFF), cd->x, rows);
	if (sc->fill == FILL_ARENA_END)
		memcpy(arena_at(rc, q->in_off), cd->x, rows);
	memcpy(arena_at(rc, R_OFF), cd->re, sizeof(cd->re));
	memcpy(arena_at(rc, W_OFF), cd->rw, sizeof(cd->rw));
	if (sc->fill != FILL_SAME_BUF)
		memset(arena_at(rc, Y_OFF), 0xa5, rows);
}

/* After the CQE: a refused batch wrote nothing, an accepted one the right rows. */
static void case_check_output(struct raw_client *rc, const struct sqe_case *sc,
                              const struct moe_sqe *q, struct case_data *cd, struct test_ref *ref)
{
	const uint32_t d = rc->region.info.d_model;
	const size_t rows = (size_t)T_CASE * d * 4;
	const uint8_t *y = arena_at(rc, sc->expect == 0 ? q->out_off : Y_OFF);
	int r;

	if (sc->expect != 0) {
		for (size_t i = 0; i < rows; i++)
			if (y[i] != 0xa5)
				fail_msg("%s: a refused batch wrote its output (byte %zu)",
				         sc->name, i);
		return;
	}
	if (q->opcode == MOE_OP_NOP)
		return;
	r = test_ref_forward(
	    ref, q->layer, cd->x, T_CASE, sc->fill == FILL_GIVEN_OK ? cd->re : NULL,
	    sc->fill == FILL_GIVEN_OK ? cd->rw : NULL, 2, cd->ry, NULL, NULL, NULL);
	ASSERT_OK(r);
	for (uint32_t t = 0; t < T_CASE; t++) {
		if (sc->fill != FILL_GIVEN_OK &&
		    test_ref_route_margin(ref, q->layer, cd->x + (size_t)t * d) < TIE_MARGIN)
			continue;
		if (test_count_mismatches(sc->name, (const float *)(const void *)y + (size_t)t * d,
		                          cd->ry + (size_t)t * d, d, ATOL, RTOL))
			fail_msg("%s: token %u differs from the reference engine", sc->name, t);
	}
}

/* ---------------------------------------------------------------- the test */

static int test_setup(void **state)
{
	memset(good_rep, 0, sizeof(*good_rep));
	return fd_check_setup(state);
}

static int test_teardown(void **state)
{
	if (daemon_.pid > 0)
		test_daemon_kill(&daemon_, SIGKILL);
	return fd_check_teardown(state);
}

static int64_t client_errors(json_t *st, const char *name)
{
	json_t *c = test_status_client(st, name);

	return c ? (int64_t)json_integer_value(json_object_get(c, "errors")) : INT64_MIN;
}

/* How long "moed took nothing" is watched for. */
#define QUIET_MS 200

/* No CQE for QUIET_MS after a doorbell: moed took nothing. */
static void raw_expect_no_cqe(struct raw_client *rc, const char *what)
{
	uint32_t n;

	raw_doorbell(rc);
	n = raw_wait_ready(rc, 1, QUIET_MS);
	if (n)
		fail_msg("%s: moed posted %u CQEs", what, n);
}

/* Reap @n ready CQEs: NOPs with user_data @first_ud ... in order, status 0. True: ring. */
static bool raw_reap_nops(struct raw_client *rc, uint32_t n, uint64_t first_ud)
{
	for (uint32_t i = 0; i < n; i++) {
		struct moe_cqe cqe;

		shm_ring_copy_out(&rc->cq, i, &cqe);
		if (cqe.user_data != first_ud + i || cqe.status != 0)
			fail_msg("CQE %u: user_data %llu status %d, expected %llu status 0", i,
			         (unsigned long long)cqe.user_data, cqe.status,
			         (unsigned long long)(first_ud + i));
	}
	return shm_ring_consume_release_resume(&rc->cq, n);
}

/*
 * What a client can write into the seq words (moe_abi.h, "Rings"), against
 * moed: only "this SQE is there" for the position moed is at. Each step
 * ends with a verified forward of the good client.
 */
static void hostile_seq_steps(struct raw_client *bad, struct good_client *good,
                              struct test_ref *ref, uint64_t *ties)
{
	const uint32_t n_sq = bad->region.info.sq_entries, n_cq = bad->region.info.cq_entries;
	const uint32_t pos = bad->sq.index;
	uint32_t *seq = &bad->region.sqes[pos & bad->sq.mask].seq;
	const uint32_t wrong[] = {pos, pos + 1 + n_sq, pos + 1 - n_sq, pos + 2, 0xdeadbeefu};
	struct moe_sqe q = {.user_data = 77, .opcode = MOE_OP_NOP};
	struct moe_cqe cqe;
	uint32_t head;

	/* a complete SQE whose seq is not position + 1 is not there */
	shm_ring_write(&bad->sq, 0, &q);
	for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
		store_release(seq, wrong[i]);
		raw_expect_no_cqe(bad, "an SQE with a wrong seq");
	}
	ASSERT_OK(good_forward(good, ref, ties));
	/* the right one: taken once */
	shm_ring_publish(&bad->sq, 1);
	raw_doorbell(bad);
	raw_wait_cqe(bad, &cqe);
	ASSERT_EQ(cqe.user_data, 77);
	ASSERT_EQ(cqe.status, 0);
	/* marked ready again for the position moed has passed: not taken twice */
	store_release(seq, pos + 1);
	raw_expect_no_cqe(bad, "a consumed slot marked ready again");
	ASSERT_OK(good_forward(good, ref, ties));

	/*
	 * Every SQ slot ready, lap after lap, and nothing reaped: moed takes
	 * exactly what the CQ holds, then stops (CQ full) without overwriting
	 * an unreaped CQE; the rest is taken once we reap.
	 */
	assert_true(n_cq == 2 * n_sq);
	head = load_acquire(&bad->sq.ctl->head);
	raw_push_nops(bad, n_sq, 1000);
	ASSERT_EQ(raw_wait_ready(bad, n_sq, CQE_TIMEOUT_MS), n_sq);
	raw_push_nops(bad, n_sq, 1000 + n_sq);
	ASSERT_EQ(raw_wait_ready(bad, n_cq, CQE_TIMEOUT_MS), n_cq);
	raw_push_nops(bad, n_sq, 1000 + n_cq);
	raw_doorbell(bad);
	usleep(QUIET_MS * 1000);
	ASSERT_EQ(shm_ring_peek(&bad->cq, UINT32_MAX), n_cq);
	ASSERT_EQ(load_acquire(&bad->sq.ctl->head), head + n_cq);
	ASSERT_OK(good_forward(good, ref, ties));
	/* moed asked to be rung (PRODUCER_WAITING) when it found the CQ full */
	assert_true(raw_reap_nops(bad, n_cq, 1000));
	raw_doorbell(bad);
	ASSERT_EQ(raw_wait_ready(bad, n_sq, CQE_TIMEOUT_MS), n_sq);
	usleep(QUIET_MS * 1000);
	ASSERT_EQ(shm_ring_peek(&bad->cq, UINT32_MAX), n_sq);
	(void)raw_reap_nops(bad, n_sq, 1000 + n_cq);
	ASSERT_EQ(load_acquire(&bad->sq.ctl->head), head + n_cq + n_sq);
	ASSERT_OK(good_forward(good, ref, ties));
}

static void run_hostile(const char *doorbell)
{
	char set_doorbell[48];
	const char *extra[] = {"--set", set_doorbell, NULL};
	static struct good_client good;
	static struct case_data cd;
	struct test_ref ref;
	struct raw_client bad, bad2, bad3;
	struct moe_hello h;
	struct moe_cqe cqe;
	struct moe_sqe q;
	uint64_t seed = 0x4057113, ties = 0;
	int stop[2], status, n_refused = 0, n_failed = 0;
	pid_t child;
	json_t *st;

	snprintf(set_doorbell, sizeof(set_doorbell), "doorbell=%s", doorbell);
	ASSERT_OK(test_daemon_start(&daemon_, extra));

	/* the good process first: the reference engine's threads must not exist at fork */
	ASSERT_OK(pipe2(stop, O_CLOEXEC));
	child = test_fork();
	assert_true(child >= 0);
	if (child == 0) {
		close(stop[1]);
		good_child(stop[0]);
	}
	close(stop[0]);

	ASSERT_OK(good_open(&good, "it-good-parent", 0x900d));
	ASSERT_OK(test_ref_open(&ref, daemon_.model_path));
	ASSERT_OK(good_forward(&good, &ref, &ties));

	raw_connect(&bad, "it-hostile");
	ASSERT_EQ(bad.region.info.d_model, ref.d_model);
	ASSERT_EQ(bad.region.info.n_layers, ref.n_layers);
	ASSERT_EQ(bad.doorbell_fd >= 0, strcmp(doorbell, "eventfd") == 0);

	/* one at a time, a good forward after each */
	for (unsigned i = 0; i < N_CASES; i++) {
		const struct sqe_case *sc = &cases[i];

		case_prepare(&bad, sc, &q, &cd, &seed);
		q.user_data = CASE_UD(i);
		raw_push(&bad, &q);
		raw_wait_cqe(&bad, &cqe);
		if (cqe.user_data != CASE_UD(i) || cqe.status != sc->expect)
			fail_msg("%s: CQE user_data %#llx status %d (%s), expected %#llx status %d",
			         sc->name, (unsigned long long)cqe.user_data, cqe.status,
			         strerror(-cqe.status), (unsigned long long)CASE_UD(i), sc->expect);
		case_check_output(&bad, sc, &q, &cd, &ref);
		n_failed += sc->expect != 0;
		if (good_forward(&good, &ref, &ties) < 0)
			fail_msg("the good client failed after hostile case '%s'", sc->name);
	}

	/* all at once, each case in its own buffers: moed validates each copy on its own */
	{
		static struct case_data cds[N_CASES];
		static struct moe_sqe qs[N_CASES];
		bool seen[N_CASES] = {false};

		assert_true(N_CASES <= bad.region.info.sq_entries);
		assert_true(BURST_BASE + N_CASES * CASE_BLOCK <= ARENA_BYTES - (64u << 10));
		for (unsigned i = 0; i < N_CASES; i++) {
			case_base = BURST_BASE + i * CASE_BLOCK;
			case_prepare(&bad, &cases[i], &qs[i], &cds[i], &seed);
			qs[i].user_data = CASE_UD(i);
			shm_ring_write(&bad.sq, i, &qs[i]);
		}
		shm_ring_publish(&bad.sq, N_CASES);
		raw_doorbell(&bad);
		for (unsigned n = 0; n < N_CASES; n++) {
			uint64_t i;

			raw_wait_cqe(&bad, &cqe);
			i = cqe.user_data ^ CASE_UD(0);
			if (i >= N_CASES || seen[i])
				fail_msg("burst: CQE user_data %#llx: unknown or twice",
				         (unsigned long long)cqe.user_data);
			seen[i] = true;
			if (cqe.status != cases[i].expect)
				fail_msg("burst: %s: status %d, expected %d", cases[i].name,
				         cqe.status, cases[i].expect);
			n_failed += cases[i].expect != 0;
		}
		for (unsigned i = 0; i < N_CASES; i++) {
			case_base = BURST_BASE + i * CASE_BLOCK;
			case_check_output(&bad, &cases[i], &qs[i], &cds[i], &ref);
		}
		case_base = 0;
	}
	ASSERT_OK(good_forward(&good, &ref, &ties));

	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "totals.clients"), 3);
	ASSERT_EQ(test_json_int(st, "totals.clients_corrupt"), 0);
	ASSERT_EQ(client_errors(st, "it-hostile"), n_failed);
	ASSERT_EQ(client_errors(st, "it-good-parent"), 0);
	ASSERT_EQ(client_errors(st, "it-good-child"), 0);
	json_decref(st);

	/* moed's own index in shared memory is only published: scribbling it changes nothing */
	case_prepare(&bad, &cases[0], &q, &cd, &seed);
	q.user_data = CASE_UD(0);
	store_release(&bad.sq.ctl->head, 0xdeadbeefu);
	shm_ring_write(&bad.sq, 0, &q);
	shm_ring_publish(&bad.sq, 1);
	raw_doorbell(&bad);
	raw_wait_cqe(&bad, &cqe);
	ASSERT_EQ(cqe.status, 0);
	case_check_output(&bad, &cases[0], &q, &cd, &ref);

	hostile_seq_steps(&bad, &good, &ref, &ties);
	raw_close(&bad);
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 2, HANGUP_TIMEOUT_MS));
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "totals.clients_corrupt"), 0);
	assert_null(test_status_client(st, "it-hostile"));
	json_decref(st);
	ASSERT_OK(good_forward(&good, &ref, &ties));

	/*
	 * A CQ head past moed's tail: corrupt as soon as moed reads it, which
	 * is when its private count of free CQ slots runs out (at the latest
	 * after cq_entries completions).
	 */
	raw_connect(&bad2, "it-hostile-cq");
	store_seq_cst(&bad2.cq.ctl->head, 1000u);
	for (uint32_t i = 0; i <= bad2.region.info.cq_entries && !raw_hung_up(&bad2); i++) {
		q = (struct moe_sqe){.user_data = i, .opcode = MOE_OP_NOP};
		while (shm_ring_free_slots(&bad2.sq, 1) == 0 && !raw_hung_up(&bad2))
			usleep(200);
		/* hung up while we waited: the punched ring reads a zero head (-EPROTO) */
		if (shm_ring_free_slots(&bad2.sq, 1) <= 0)
			break;
		raw_push(&bad2, &q);
	}
	raw_expect_hangup(&bad2, "CQ head past the tail");
	ASSERT_OK(
	    test_status_wait_int(daemon_.socket, "totals.clients_corrupt", 1, HANGUP_TIMEOUT_MS));
	raw_close(&bad2);
	ASSERT_OK(good_forward(&good, &ref, &ties));

	/* a message on the session socket after HELLO ends the session */
	raw_connect(&bad3, "it-hostile-talks");
	hello_init(&h, "again");
	ASSERT_EQ(send(bad3.sock, &h, sizeof(h), MSG_NOSIGNAL), sizeof(h));
	raw_expect_hangup(&bad3, "a second HELLO on the session socket");
	raw_close(&bad3);

	/* HELLOs moed refuses: -errno, no fds, nothing mapped */
	hello_init(&h, "it-refused");
	h.arena_size = 1ull << 50;
	ASSERT_EQ(raw_hello(&bad3, &h), -E2BIG);
	n_refused++;
	hello_init(&h, "it-refused");
	h.sq_entries = 48;
	ASSERT_EQ(raw_hello(&bad3, &h), -EINVAL);
	n_refused++;
	hello_init(&h, "it-refused");
	h.cq_entries = 32; /* below sq_entries */
	ASSERT_EQ(raw_hello(&bad3, &h), -EINVAL);
	n_refused++;
	hello_init(&h, "it-refused");
	h.abi_major = MOE_ABI_MAJOR + 1;
	ASSERT_EQ(raw_hello(&bad3, &h), -EPROTONOSUPPORT);
	n_refused++;
	ASSERT_OK(good_forward(&good, &ref, &ties));

	/* the good process ran all along */
	close(stop[1]);
	ASSERT_OK(test_children_wait(&child, 1, 60000));
	assert_int_equal(good_rep->finished, 1);
	assert_true(good_rep->forwards > 0);
	fprintf(stderr,
	        "test: the good process ran %llu verified forwards meanwhile "
	        "(%llu + %llu near-tie tokens not compared)\n",
	        (unsigned long long)good_rep->forwards, (unsigned long long)good_rep->ties,
	        (unsigned long long)ties);

	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "totals.clients_refused"), n_refused);
	ASSERT_EQ(test_json_int(st, "totals.clients_corrupt"), 1);
	ASSERT_EQ(client_errors(st, "it-good-parent"), 0);
	json_decref(st);

	good_close(&good);
	test_ref_close(&ref);
	status = test_daemon_stop(&daemon_);
	ASSERT_EQ(status, 0);
}

/*
 * A connection that never says HELLO is closed after hello_timeout_ms (1 s
 * here): the client sees EOF, and moed goes on serving.
 */
static void test_hello_timeout(void **state)
{
	const char *extra[] = {"--set", "hello_timeout_ms=1000", NULL};
	struct raw_client rc;
	struct pollfd p = {.events = POLLIN | POLLRDHUP};
	int64_t t0;
	ssize_t n = -1;
	char byte;
	int r;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	p.fd = ctl_connect();
	t0 = test_now_ns();
	r = poll(&p, 1, HANGUP_TIMEOUT_MS);
	if (r > 0)
		n = recv(p.fd, &byte, 1, MSG_DONTWAIT);
	close(p.fd);
	if (r <= 0)
		fail_msg("a connection that never said HELLO is still open %d ms later "
		         "(hello_timeout_ms=1000)",
		         HANGUP_TIMEOUT_MS);
	ASSERT_EQ(n, 0); /* EOF, not a message */
	fprintf(stderr, "test: the silent connection was closed after %.0f ms\n",
	        (double)(test_now_ns() - t0) / 1e6);
	/* and the next client is served */
	raw_connect(&rc, "it-after-silent");
	raw_close(&rc);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

#define HOSTILE_NAME "ok\n<0>forged\x1b[2J\xff"
#define ESCAPED_NAME "ok\\x0a<0>forged\\x1b[2J\\xff"

/* Start moed with its stderr (its log) going to @log_path. */
static void daemon_start_logged(const char *log_path)
{
	int saved = dup(STDERR_FILENO);
	int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int r;

	assert_true(saved >= 0 && fd >= 0);
	fflush(stderr);
	ASSERT_EQ(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	r = test_daemon_start(&daemon_, NULL);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fd);
	ASSERT_OK(r);
}

static void test_hostile_name(void **state)
{
	char log_path[sizeof(daemon_.dir) + 16], line[1024], old_major[128];
	struct raw_client rc;
	struct moe_hello h;
	bool named = false, versions = false;
	json_t *st;
	FILE *log;

	(void)state;
	snprintf(old_major, sizeof(old_major), "the client speaks ABI %u.%u, moed ABI %u.%u",
	         MOE_ABI_MAJOR - 1, MOE_ABI_MINOR, MOE_ABI_MAJOR, MOE_ABI_MINOR);
	snprintf(log_path, sizeof(log_path), "%s/moed.log", daemon_.dir);
	daemon_start_logged(log_path);
	/* a client of the previous ABI major: refused, and the log names both */
	hello_init(&h, "it-old-major");
	h.abi_major = MOE_ABI_MAJOR - 1;
	ASSERT_EQ(raw_hello(&rc, &h), -EPROTONOSUPPORT);
	ASSERT_EQ(rc.daemon_abi_major, MOE_ABI_MAJOR); /* the old client learns moed's */
	raw_connect(&rc, HOSTILE_NAME);
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	if (!test_status_client(st, ESCAPED_NAME))
		fail_msg("status --json does not list the client as \"%s\"", ESCAPED_NAME);
	ASSERT_EQ(test_json_int(st, "totals.clients"), 1);
	json_decref(st);
	raw_close(&rc);
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, HANGUP_TIMEOUT_MS));
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);

	log = fopen(log_path, "r");
	assert_non_null(log);
	while (fgets(line, sizeof(line), log)) {
		fprintf(stderr, "moed log: %s", line);
		if (strncmp(line, "<0>", 3) == 0)
			fail_msg("a forged priority-0 line in moed's log: %s", line);
		if (strchr(line, '\x1b'))
			fail_msg("a raw ESC in moed's log: %s", line);
		named |= strstr(line, ESCAPED_NAME) != NULL;
		versions |= strstr(line, old_major) != NULL;
	}
	fclose(log);
	unlink(log_path);
	assert_true(named);
	if (!versions)
		fail_msg("moed's log does not say \"%s\"", old_major);
}

static void test_hostile_futex(void **state)
{
	(void)state;
	run_hostile("auto");
}

static void test_hostile_eventfd(void **state)
{
	(void)state;
	run_hostile("eventfd");
}

static int group_setup(void **state)
{
	(void)state;
	good_rep = mmap(NULL, sizeof(*good_rep), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                -1, 0);
	if (good_rep == MAP_FAILED)
		return -1;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	munmap(good_rep, sizeof(*good_rep));
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_hostile_futex, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_hostile_eventfd, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_hello_timeout, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_hostile_name, test_setup, test_teardown),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
