/* SPDX-License-Identifier: MIT */
/*
 * Two hostile sessions race flipper threads at once, with a good client
 * beside them.
 *
 * Each hostile session is a raw client (no libmoe: HELLO on the control
 * socket, the memfds mapped with shm_region_attach(), SQEs written into the
 * ring directly) with two threads. The submitter keeps publishing valid
 * FORWARD SQEs (a few tokens, either layer) and reaping their CQEs, at most
 * DEPTH in flight. The flipper, all the while, stores random values into
 * the SQ slots (random words but the seq, offsets in and out of the arena, layers,
 * token counts, flags) and random bits into the arena's input rows, so that
 * moed reads SQEs and inputs that change under it, before, during and after
 * the copy it validates. Both sessions run at the same time.
 *
 * Asserted: moed stays up; every CQE a submitter reaps has a status in
 * {0, -EINVAL, -EDOM, -ERANGE}, and every SQE it published completes
 * (unless moed disconnected the session for corrupting its ring, which is
 * allowed, and counted); the good libmoe client in the test's own thread
 * gets correct results (against the embedded engine, near-tie tokens
 * excepted) the whole time; moed exits 0 on SIGTERM. With the futex (auto)
 * and the eventfd doorbell. Sanitizer builds run fewer iterations.
 *
 * Only the test's main thread calls CMocka: the threads record what they saw
 * and the main thread asserts it after joining them.
 *
 * usage: it_flipper MOED [MOECTL]
 */
#include "test_assert.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <moe.h>

#include "moe_abi.h"
#include "moe_proto.h"
#include "shm_region.h"
#include "shm_ring.h"
#include "test_daemon.h"

#define N_HOSTILE      2
#define DEPTH          8
#define MAX_T_RAW      8 /* tokens of a submitter's SQE */
#define MAX_T_GOOD     16
#define ARENA_BYTES    (1u << 20)
#define IN_OFF         0u
#define OUT_OFF        (256u << 10)
#define CQE_TIMEOUT_MS 60000
#define ATOL           1e-4
#define RTOL           1e-4
#define TIE_MARGIN     1e-3

static const char *arg_moed;
static struct test_daemon daemon_;

/* ---------------------------------------------------------------- a raw session */

struct hostile {
	/* set up by the main thread before the threads start */
	int sock;
	int doorbell_fd; /* eventfd doorbell, or -1: futex */
	struct shm_region region;
	struct shm_ring sq, cq;
	uint64_t seed;
	unsigned iters;
	pthread_t submitter, flipper;
	atomic_bool stop; /* the flipper stops */
	atomic_bool done; /* the submitter finished */
	/* the submitter's findings, read after join */
	uint64_t submitted, reaped, by_status[4], flips;
	bool disconnected;
	char error[160]; /* non-empty: what went wrong */
};

static const int allowed_status[4] = {0, -EINVAL, -EDOM, -ERANGE};

/* splitmix64: each thread its own stream */
static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void hostile_connect(struct hostile *h, const char *name)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} control;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct moe_hello hello = {
	    .hdr = {.magic = MOE_PROTO_MAGIC, .type = MOE_MSG_HELLO, .size = sizeof(hello)},
	    .abi_major = MOE_ABI_MAJOR,
	    .abi_minor = MOE_ABI_MINOR,
	    .sq_entries = 64,
	    .cq_entries = 128,
	    .arena_size = ARENA_BYTES,
	};
	struct moe_hello_reply reply;
	struct iovec iov = {.iov_base = &reply, .iov_len = sizeof(reply)};
	struct msghdr mh = {.msg_iov = &iov,
	                    .msg_iovlen = 1,
	                    .msg_control = control.buf,
	                    .msg_controllen = sizeof(control.buf)};
	int fds[4] = {-1, -1, -1, -1};
	unsigned n_fds = 0;

	h->doorbell_fd = -1;
	snprintf(hello.name, sizeof(hello.name), "%s", name);
	memcpy(sa.sun_path, daemon_.socket, sizeof(daemon_.socket));
	h->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(h->sock >= 0);
	ASSERT_OK(connect(h->sock, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_EQ(send(h->sock, &hello, sizeof(hello), MSG_NOSIGNAL), sizeof(hello));
	ASSERT_EQ(recvmsg(h->sock, &mh, MSG_CMSG_CLOEXEC), sizeof(reply));
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int) && n_fds < 4; i++)
			memcpy(&fds[n_fds++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
	}
	ASSERT_EQ(reply.status, 0);
	assert_true(n_fds == 2 || n_fds == 3);
	ASSERT_OK(shm_region_attach(fds[0], fds[1], NULL, &h->region));
	if (n_fds == 3)
		h->doorbell_fd = fds[2];
	ASSERT_OK(shm_ring_init(&h->sq, h->region.sq_ctl, h->region.sqes, h->region.info.sq_entries,
	                        sizeof(struct moe_sqe), 0));
	ASSERT_OK(shm_ring_init(&h->cq, h->region.cq_ctl, h->region.cqes, h->region.info.cq_entries,
	                        sizeof(struct moe_cqe), 0));
}

static void hostile_close(struct hostile *h)
{
	shm_region_done(&h->region);
	if (h->doorbell_fd >= 0)
		close(h->doorbell_fd);
	if (h->sock >= 0)
		close(h->sock);
	h->doorbell_fd = h->sock = -1;
}

/* Valid rows: N(0, 1) in the input area (the flipper spoils them again). */
static void hostile_fill_input(struct hostile *h, uint64_t *seed)
{
	test_fill_normal((float *)(void *)(h->region.arena + IN_OFF),
	                 (size_t)MAX_T_RAW * h->region.info.d_model, seed);
}

/* ---------------------------------------------------------------- the submitter */

static void *hostile_fail(struct hostile *h, const char *what, long v)
{
	snprintf(h->error, sizeof(h->error), "%s (%ld)", what, v);
	return NULL;
}

/* Has moed closed the session socket? */
static bool hostile_hung_up(struct hostile *h)
{
	struct pollfd p = {.fd = h->sock, .events = POLLIN | POLLRDHUP};

	return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR));
}

/* Reap what is there. 0, or -1 with h->error set. */
static int hostile_reap(struct hostile *h)
{
	struct moe_cqe cqe;
	uint32_t n = shm_ring_peek(&h->cq, UINT32_MAX);

	for (uint32_t i = 0; i < n; i++) {
		unsigned k = 0;

		shm_ring_copy_out(&h->cq, 0, &cqe);
		shm_ring_consume_release(&h->cq, 1);
		h->reaped++;
		while (k < 4 && allowed_status[k] != cqe.status)
			k++;
		if (k == 4) {
			hostile_fail(h, "a CQE status outside {0, -EINVAL, -EDOM, -ERANGE}",
			             cqe.status);
			return -1;
		}
		h->by_status[k]++;
	}
	return 0;
}

/*
 * Reap until at most @max are in flight. 0; 1 when moed disconnected the
 * session; -1 on a failure (h->error).
 */
static int hostile_reap_until(struct hostile *h, uint64_t max)
{
	int64_t deadline = test_now_ns() + (int64_t)CQE_TIMEOUT_MS * 1000000;

	while (h->submitted - h->reaped > max) {
		if (hostile_reap(h) < 0)
			return -1;
		if (h->submitted - h->reaped <= max)
			break;
		if (hostile_hung_up(h)) {
			h->disconnected = true;
			return 1;
		}
		if (test_now_ns() > deadline) {
			hostile_fail(h, "CQEs missing after the timeout",
			             (long)(h->submitted - h->reaped));
			return -1;
		}
		usleep(50);
	}
	return 0;
}

static void *submitter_run(struct hostile *h)
{
	const struct moe_region_info *info = &h->region.info;
	uint64_t seed = h->seed;
	const uint64_t one = 1;

	for (unsigned i = 0; i < h->iters; i++) {
		struct moe_sqe q = {0};
		int free_slots, r = hostile_reap_until(h, DEPTH - 1);

		if (r)
			break;
		free_slots = shm_ring_free_slots(&h->sq, 1);
		if (free_slots < 0)
			return hostile_fail(h, "moed published a corrupt SQ head", free_slots);
		if (free_slots == 0) {
			i--; /* moed has not consumed yet: in flight < DEPTH <= ring */
			usleep(50);
			continue;
		}
		if (i % 16 == 0)
			hostile_fill_input(h, &seed);
		q.user_data = ((uint64_t)i << 8) | 0x5a;
		q.opcode = MOE_OP_FORWARD;
		q.layer = (uint16_t)(rnd(&seed) % info->n_layers);
		q.n_tokens = 1 + (uint32_t)(rnd(&seed) % MAX_T_RAW);
		q.in_off = IN_OFF;
		q.out_off = OUT_OFF + (rnd(&seed) % 8) * (32u << 10);
		shm_ring_write(&h->sq, 0, &q);
		shm_ring_publish(&h->sq, 1);
		h->submitted++;
		if (h->doorbell_fd >= 0) {
			if (write(h->doorbell_fd, &one, sizeof(one)) != sizeof(one))
				return hostile_fail(h, "doorbell write", -errno);
		} else {
			shm_ring_wake_consumer(&h->sq);
		}
	}
	if (!h->disconnected && !h->error[0])
		hostile_reap_until(h, 0);
	return NULL;
}

static void *submitter_main(void *arg)
{
	struct hostile *h = arg;

	submitter_run(h);
	atomic_store(&h->done, true); /* on every path: the main thread waits for it */
	return NULL;
}

/* ---------------------------------------------------------------- the flipper */

/* A racy store into shared memory, on purpose: moed must live with it. */
#define FLIP(_p, _v) __atomic_store_n((_p), (_v), __ATOMIC_RELAXED)

static void flip_once(struct hostile *h, uint64_t *seed)
{
	const struct moe_region_info *info = &h->region.info;
	struct moe_sqe *q = &h->region.sqes[rnd(seed) % info->sq_entries];
	uint64_t v = rnd(seed), arena_off = (rnd(seed) % info->arena_size) & ~63ull;

	switch (rnd(seed) % 10) {
	case 0:
		/*
		 * A random word anywhere in the slot after the first (which
		 * holds the seq word: spoiling it only stalls this client's
		 * own ring, a case it_hostile_client covers step by step).
		 */
		FLIP((uint64_t *)(void *)q + 1 + rnd(seed) % (sizeof(*q) / 8 - 1), v);
		break;
	case 1:
		FLIP(&q->in_off, rnd(seed) % 2 ? arena_off : v);
		break;
	case 2:
		FLIP(&q->out_off, rnd(seed) % 2 ? arena_off : v);
		break;
	case 3:
		FLIP(&q->layer, (uint16_t)(rnd(seed) % 2 ? v % (info->n_layers + 1) : v));
		break;
	case 4:
		FLIP(&q->n_tokens, (uint32_t)(rnd(seed) % 4 ? 1 + v % 64 : v));
		break;
	case 5:
		FLIP(&q->flags, (uint16_t)v);
		break;
	case 6:
		FLIP(&q->opcode, (uint8_t)(v % 3));
		break;
	default: /* random bits into the input rows: NaN, Inf, 1e30, or harmless */
		FLIP((uint32_t *)(void *)(h->region.arena + IN_OFF) +
		         v % ((size_t)MAX_T_RAW * info->d_model),
		     (uint32_t)(v >> 32));
		break;
	}
}

static void *flipper_main(void *arg)
{
	struct hostile *h = arg;
	uint64_t seed = h->seed ^ 0xf11b;

	while (!atomic_load(&h->stop)) {
		flip_once(h, &seed);
		h->flips++;
		if (h->flips % 64 == 0)
			sched_yield();
	}
	return NULL;
}

/* ---------------------------------------------------------------- the good client */

struct good {
	struct moe_client *c;
	struct moe_model_info mi;
	struct test_ref ref;
	float *x, *y, *ry;
	uint64_t seed, forwards, ties;
};

static void good_open(struct good *g)
{
	struct moe_client_opts o;
	size_t bytes;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "flipper-good";
	o.arena_size = 1u << 20;
	ASSERT_OK(moe_connect(&o, &g->c));
	g->mi.size = sizeof(g->mi);
	ASSERT_OK(moe_model_info_get(g->c, &g->mi));
	bytes = (size_t)MAX_T_GOOD * g->mi.d_model * sizeof(float);
	ASSERT_OK(moe_buf_alloc(g->c, bytes, (void **)&g->x));
	ASSERT_OK(moe_buf_alloc(g->c, bytes, (void **)&g->y));
	g->ry = malloc(bytes);
	assert_non_null(g->ry);
	ASSERT_OK(test_ref_open(&g->ref, daemon_.model_path));
}

static void good_close(struct good *g)
{
	test_ref_close(&g->ref);
	free(g->ry);
	moe_buf_free(g->c, g->x);
	moe_buf_free(g->c, g->y);
	moe_close(g->c);
}

/* One forward, checked against the embedded engine. */
static void good_forward(struct good *g)
{
	const uint32_t d = g->mi.d_model;
	uint32_t T = 1 + (uint32_t)(g->seed % MAX_T_GOOD);
	struct moe_completion done;
	struct moe_request rq;

	moe_request_init(&rq);
	rq.layer = (uint32_t)(g->seed >> 8) % g->mi.n_layers;
	test_fill_normal(g->x, (size_t)T * d, &g->seed);
	memset(g->y, 0xff, (size_t)T * d * sizeof(float));
	rq.user_data = g->forwards;
	rq.n_tokens = T;
	rq.input = g->x;
	rq.output = g->y;
	ASSERT_OK(moe_forward(g->c, &rq, &done));
	ASSERT_EQ(done.status, 0);
	ASSERT_EQ(done.user_data, g->forwards);
	ASSERT_OK(
	    test_ref_forward(&g->ref, rq.layer, g->x, T, NULL, NULL, 0, g->ry, NULL, NULL, NULL));
	for (uint32_t t = 0; t < T; t++) {
		if (test_ref_route_margin(&g->ref, rq.layer, g->x + (size_t)t * d) < TIE_MARGIN) {
			g->ties++;
			continue;
		}
		ASSERT_EQ(test_count_mismatches("good client", g->y + (size_t)t * d,
		                                g->ry + (size_t)t * d, d, ATOL, RTOL),
		          0);
	}
	g->forwards++;
}

/* ---------------------------------------------------------------- the test */

static void run_flippers(const char *doorbell)
{
	const char *extra[] = {"--set", doorbell, NULL};
	static struct hostile hs[N_HOSTILE];
	static struct good g;
	uint64_t errors_seen = 0, ok_seen = 0;
	bool all_done = false;
	json_t *st;

	memset(hs, 0, sizeof(hs));
	memset(&g, 0, sizeof(g));
	g.seed = 0x600d;
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	good_open(&g);
	for (unsigned i = 0; i < N_HOSTILE; i++) {
		char name[32];

		snprintf(name, sizeof(name), "flipper-%u", i);
		hostile_connect(&hs[i], name);
		hs[i].seed = 0x1234 + i;
		hs[i].iters = test_scale(3000, 1000);
		hostile_fill_input(&hs[i], &hs[i].seed);
	}
	for (unsigned i = 0; i < N_HOSTILE; i++) {
		ASSERT_EQ(pthread_create(&hs[i].flipper, NULL, flipper_main, &hs[i]), 0);
		ASSERT_EQ(pthread_create(&hs[i].submitter, NULL, submitter_main, &hs[i]), 0);
	}
	/* the good client runs for as long as the hostile sessions do */
	while (!all_done) {
		good_forward(&g);
		assert_true(test_daemon_alive(&daemon_));
		all_done = true;
		for (unsigned i = 0; i < N_HOSTILE; i++)
			all_done = all_done && atomic_load(&hs[i].done);
	}
	for (unsigned i = 0; i < N_HOSTILE; i++) {
		ASSERT_EQ(pthread_join(hs[i].submitter, NULL), 0);
		atomic_store(&hs[i].stop, true);
		ASSERT_EQ(pthread_join(hs[i].flipper, NULL), 0);
	}
	good_forward(&g); /* still served after the storm */

	for (unsigned i = 0; i < N_HOSTILE; i++) {
		struct hostile *h = &hs[i];

		fprintf(
		    stderr,
		    "test: %s: session %u: %llu submitted, %llu reaped (0: %llu, -EINVAL: %llu, "
		    "-EDOM: %llu, -ERANGE: %llu), %llu flips%s\n",
		    doorbell, i, (unsigned long long)h->submitted, (unsigned long long)h->reaped,
		    (unsigned long long)h->by_status[0], (unsigned long long)h->by_status[1],
		    (unsigned long long)h->by_status[2], (unsigned long long)h->by_status[3],
		    (unsigned long long)h->flips,
		    h->disconnected ? ", disconnected for corrupting its ring" : "");
		if (h->error[0])
			fail_msg("session %u: %s", i, h->error);
		if (!h->disconnected)
			ASSERT_EQ(h->reaped, h->submitted);
		ok_seen += h->by_status[0];
		errors_seen += h->reaped - h->by_status[0];
		hostile_close(h);
	}
	fprintf(stderr, "test: %s: good client: %llu verified forwards, %llu near-tie tokens\n",
	        doorbell, (unsigned long long)g.forwards, (unsigned long long)g.ties);
	/* the flips did reach moed, and not every batch was spoiled */
	assert_true(errors_seen > 0);
	assert_true(ok_seen > 0);
	good_close(&g);

	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	fprintf(stderr, "test: %s: totals.errors %lld, rejected %lld, clients_corrupt %lld\n",
	        doorbell, (long long)test_json_int(st, "totals.errors"),
	        (long long)test_json_int(st, "totals.rejected"),
	        (long long)test_json_int(st, "totals.clients_corrupt"));
	json_decref(st);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static void test_flippers_futex(void **state)
{
	(void)state;
	run_flippers("doorbell=auto");
}

static void test_flippers_eventfd(void **state)
{
	(void)state;
	run_flippers("doorbell=eventfd");
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
	    cmocka_unit_test(test_flippers_futex),
	    cmocka_unit_test(test_flippers_eventfd),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
