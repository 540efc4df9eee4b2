/* SPDX-License-Identifier: MIT */
/*
 * Tests of libmoe's public API that need no real moed. A fake daemon runs in
 * a thread of this test on a SOCK_SEQPACKET socket in a temporary folder: it
 * answers HELLO with garbage, wrong magic, a wrong ABI, too many fds, and so
 * on, to check that moe_connect() fails cleanly and leaks no fd; or it builds
 * a real region with moe_shm's daemon-side calls and then either consumes
 * SQEs itself (2 * input -> output; waking and sleeping as moed would) or
 * leaves the rings to the test's main thread, which then plays the daemon
 * step by step (timeouts, PRODUCER_WAITING, a corrupted ring). Daemon death
 * and moe_reconnect() are the fake daemon hanging up and accepting again.
 *
 * Every test ends by checking that the process holds as many fds as before.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "moe.h"
#include "moe_abi.h"
#include "moe_proto.h"
#include "shm_atomic.h"
#include "shm_futex.h"
#include "shm_region.h"
#include "shm_ring.h"
#include "test_assert.h"
#include "test_fds.h"

/* ---- the fake daemon ---- */

enum fake_mode {
	FAKE_GARBAGE,         /* 7 bytes of text */
	FAKE_HANGUP,          /* close without a reply */
	FAKE_BAD_MAGIC,       /* a reply with 2 fds, wrong magic */
	FAKE_BAD_TYPE,        /* a reply with 2 fds, type STATUS_REPLY */
	FAKE_BAD_SIZE,        /* a reply with 2 fds, hdr.size off by one */
	FAKE_LONG_REPLY,      /* a reply with 8 bytes too many */
	FAKE_WRONG_ABI,       /* status 0, abi_major + 1, 2 fds */
	FAKE_TOO_MANY_FDS,    /* 4 fds, n_fds 4 */
	FAKE_FD_COUNT_WRONG,  /* 2 fds, n_fds 3 */
	FAKE_FDS_NOT_EVENTFD, /* 3 fds, n_fds 3, but the info page has no EVENTFD flag */
	FAKE_POSITIVE_STATUS, /* status 5 */
	FAKE_REFUSED,         /* status -E2BIG, no fds */
	FAKE_BOGUS_REGION,    /* 2 empty memfds */
	FAKE_AUTO,            /* a real region; the fake daemon consumes SQEs */
	FAKE_MANUAL,          /* a real region; the test's main thread plays the daemon */
	FAKE_STATUS,          /* STATUS: a JSON memfd */
	FAKE_STATUS_SHORT,    /* STATUS: json_size beyond the memfd's size */
	FAKE_STATUS_REFUSED,  /* STATUS: status -EPERM */
	/* a hand-built, well-formed region whose memfds lack a seal (or not: control) */
	FAKE_INFO_UNSEALED,   /* info memfd without any seal */
	FAKE_INFO_WRITABLE,   /* info memfd sealed against shrink and grow, not write */
	FAKE_RING_GROWABLE,   /* ring memfd sealed against shrink only */
	FAKE_HAND_SEALED,     /* both sealed as moed seals them */
};

#define FAKE_D_MODEL 16
#define FAKE_N_LAYERS 2
#define FAKE_MAX_TOKENS 64
#define FAKE_CLIENT_ID 7
#define FAKE_JSON "{\"model\":\"fake\",\"clients\":[]}"

struct fake_daemon {
	char dir[64];
	char path[100];
	int listen_fd;
	pthread_t thread;
	enum fake_mode mode;
	bool eventfd;           /* hand out an eventfd doorbell */
	bool extra_fd;          /* send a third fd without saying EVENTFD in the info page */
	unsigned n_conns;       /* connections to serve before the thread exits */
	uint64_t arena_size[3]; /* per connection; 0: as the client asked */

	/* what the client said (first connection) */
	struct moe_hello hello;
	ssize_t hello_len;

	/* the current connection's region: the test's main thread uses it in FAKE_MANUAL */
	struct shm_region region;
	struct shm_ring sq, cq;
	int efd;
	int ready; /* atomic: region and rings are set up */
	int die;   /* atomic: the main thread asks the daemon to hang up */
	bool running;
};


static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int send_with_fds(int fd, const void *msg, size_t len, const int *fds, unsigned n_fds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 8)];
	} control;
	struct iovec iov = {.iov_base = (void *)(uintptr_t)msg, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	memset(&control, 0, sizeof(control));
	if (n_fds > 0) {
		struct cmsghdr *c;

		mh.msg_control = control.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
	}
	return sendmsg(fd, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

static void reply_init(struct moe_hello_reply *rep, unsigned n_fds)
{
	*rep = (struct moe_hello_reply){
		.hdr = {.magic = MOE_PROTO_MAGIC, .type = MOE_MSG_HELLO_REPLY,
			.size = sizeof(*rep)},
		.abi_major = MOE_ABI_MAJOR,
		.abi_minor = MOE_ABI_MINOR,
		.client_id = FAKE_CLIENT_ID,
		.n_fds = n_fds,
		.max_arena_size = 1ull << 30,
		.max_sq_entries = 1024,
		.max_tokens = FAKE_MAX_TOKENS,
	};
}

/* A reply with @n junk memfds attached (closed here after sending). */
static void fake_reply_with_memfds(int conn, const void *rep, size_t len, unsigned n)
{
	int fds[8];

	for (unsigned i = 0; i < n; i++)
		fds[i] = memfd_create("junk", MFD_CLOEXEC);
	send_with_fds(conn, rep, len, fds, n);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

/* One forward request, as moed would run it if every expert doubled its input. */
static struct moe_cqe fake_run(struct fake_daemon *d, const struct moe_sqe *sqe)
{
	struct moe_cqe cqe = {.user_data = sqe->user_data, .status = -EINVAL};
	uint64_t len = (uint64_t)sqe->n_tokens * FAKE_D_MODEL * sizeof(float);
	uint64_t size = d->region.info.arena_size;

	if (sqe->opcode != MOE_OP_FORWARD || sqe->in_off > size || len > size - sqe->in_off ||
	    sqe->out_off > size || len > size - sqe->out_off)
		return cqe;
	const float *x = (const float *)(d->region.arena + sqe->in_off);
	float *y = (float *)(d->region.arena + sqe->out_off);

	for (uint64_t i = 0; i < len / sizeof(float); i++)
		y[i] = 2.0f * x[i];
	cqe.status = 0;
	cqe.flags = MOE_CQE_F_MERGED;
	cqe.n_dropped = sqe->n_tokens;
	cqe.aux_loss = 0.25f;
	return cqe;
}

static bool fake_conn_hung_up(int conn, int timeout_ms)
{
	struct pollfd p = {.fd = conn, .events = POLLRDHUP};

	return poll(&p, 1, timeout_ms) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* FAKE_AUTO: consume SQEs, post CQEs, sleep on the doorbell as moed would. */
static void fake_daemon_loop(struct fake_daemon *d, int conn)
{
	while (!__atomic_load_n(&d->die, __ATOMIC_ACQUIRE)) {
		int n = (int)shm_ring_peek(&d->sq, UINT32_MAX);

		if (n > 0) {
			for (int i = 0; i < n; i++) {
				struct moe_sqe sqe;
				struct moe_cqe cqe;

				shm_ring_copy_out(&d->sq, (uint32_t)i, &sqe);
				cqe = fake_run(d, &sqe);
				/* The client never has more in flight than the CQ holds here. */
				while (shm_ring_free_slots(&d->cq, 1) == 0)
					usleep(100);
				shm_ring_write(&d->cq, 0, &cqe);
				if (shm_ring_publish(&d->cq, 1))
					shm_ring_wake_consumer(&d->cq);
			}
			shm_ring_consume_release(&d->sq, (uint32_t)n);
			continue;
		}
		if (fake_conn_hung_up(conn, 0))
			return;
		if (d->eventfd) {
			struct pollfd p = {.fd = d->efd, .events = POLLIN};
			uint64_t v;
			uint32_t unused;

			/* eventfd mode: NEED_WAKEUP still tells the client to ring. */
			if (shm_ring_prepare_sleep(&d->sq, &unused)) {
				if (poll(&p, 1, 10) > 0)
					(void)!read(d->efd, &v, sizeof(v));
			}
			shm_ring_clear_sleep(&d->sq);
		} else {
			uint32_t v;

			if (shm_ring_prepare_sleep(&d->sq, &v))
				shm_futex_wait(&d->sq.ctl->futex, v, 10 * 1000 * 1000);
			shm_ring_clear_sleep(&d->sq);
		}
	}
}

static void fake_serve_region(struct fake_daemon *d, int conn, unsigned conn_no)
{
	struct moe_region_info info = {0};
	struct moe_hello_reply rep;
	uint64_t arena = d->arena_size[conn_no] ? d->arena_size[conn_no] : d->hello.arena_size;
	bool third_fd = d->eventfd || d->extra_fd;
	int fds[3];

	if (shm_region_layout(d->hello.sq_entries, d->hello.cq_entries, arena, &info) < 0)
		return;
	info.flags = d->eventfd ? MOE_REGION_F_EVENTFD_DOORBELL : 0;
	info.client_id = FAKE_CLIENT_ID + conn_no;
	info.max_tokens = FAKE_MAX_TOKENS;
	info.d_model = FAKE_D_MODEL;
	info.n_layers = FAKE_N_LAYERS;
	info.max_experts = 8;
	info.max_slots = 2;
	snprintf(info.model_name, sizeof(info.model_name), "fake-model");
	if (shm_region_create(&info, &d->region) < 0)
		return;
	d->efd = third_fd ? eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : -1;
	shm_ring_init(&d->sq, d->region.sq_ctl, d->region.sqes, info.sq_entries,
		      sizeof(struct moe_sqe), 0);
	shm_ring_init(&d->cq, d->region.cq_ctl, d->region.cqes, info.cq_entries,
		      sizeof(struct moe_cqe), 0);
	__atomic_store_n(&d->ready, 1, __ATOMIC_RELEASE);

	reply_init(&rep, third_fd ? 3 : 2);
	rep.client_id = info.client_id;
	fds[0] = d->region.info_fd;
	fds[1] = d->region.ring_fd;
	fds[2] = d->efd;
	send_with_fds(conn, &rep, sizeof(rep), fds, rep.n_fds);

	if (d->mode == FAKE_AUTO)
		fake_daemon_loop(d, conn);
	else
		while (!__atomic_load_n(&d->die, __ATOMIC_ACQUIRE) && !fake_conn_hung_up(conn, 10))
			;

	__atomic_store_n(&d->ready, 0, __ATOMIC_RELEASE);
	shm_region_done(&d->region);
	if (d->efd >= 0)
		close(d->efd);
	d->efd = -1;
}

static void fake_serve_status(struct fake_daemon *d, int conn)
{
	struct moe_status_reply rep = {
		.hdr = {.magic = MOE_PROTO_MAGIC, .type = MOE_MSG_STATUS_REPLY,
			.size = sizeof(rep)},
		.json_size = strlen(FAKE_JSON),
	};
	int mfd;

	if (d->mode == FAKE_STATUS_REFUSED) {
		rep.status = -EPERM;
		send_with_fds(conn, &rep, sizeof(rep), NULL, 0);
		return;
	}
	mfd = memfd_create("status", MFD_CLOEXEC);
	(void)!write(mfd, FAKE_JSON, strlen(FAKE_JSON));
	if (d->mode == FAKE_STATUS_SHORT)
		rep.json_size += 100;
	send_with_fds(conn, &rep, sizeof(rep), &mfd, 1);
	close(mfd);
}

/*
 * A region built by hand rather than by shm_region_create(), with the given
 * seals, so that a fake daemon can hand out memfds it could later shrink or
 * rewrite under the client. Everything else is as moed lays it out.
 */
static void fake_serve_hand_region(struct fake_daemon *d, int conn, int info_seals,
				   int ring_seals)
{
	struct moe_region_info info = {0};
	struct moe_hello_reply rep;
	int fds[2];

	if (shm_region_layout(d->hello.sq_entries, d->hello.cq_entries, d->hello.arena_size,
			      &info) < 0)
		return;
	info.client_id = FAKE_CLIENT_ID;
	info.max_tokens = FAKE_MAX_TOKENS;
	info.d_model = FAKE_D_MODEL;
	info.n_layers = FAKE_N_LAYERS;
	info.max_experts = 8;
	info.max_slots = 2;
	snprintf(info.model_name, sizeof(info.model_name), "fake-model");
	fds[0] = memfd_create("moe-region-info", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	fds[1] = memfd_create("moe-region-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fds[0] >= 0 && fds[1] >= 0 &&
	    pwrite(fds[0], &info, sizeof(info), 0) == (ssize_t)sizeof(info) &&
	    ftruncate(fds[1], (off_t)info.ring_size) == 0 &&
	    (!info_seals || fcntl(fds[0], F_ADD_SEALS, info_seals) == 0) &&
	    (!ring_seals || fcntl(fds[1], F_ADD_SEALS, ring_seals) == 0)) {
		reply_init(&rep, 2);
		send_with_fds(conn, &rep, sizeof(rep), fds, 2);
	}
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
}

static void fake_serve(struct fake_daemon *d, int conn, unsigned conn_no)
{
	struct moe_hello_reply rep;
	struct moe_hello hello;
	ssize_t n = recv(conn, &hello, sizeof(hello), 0);

	if (conn_no == 0) {
		d->hello = hello;
		d->hello_len = n;
	}
	reply_init(&rep, 2);
	switch (d->mode) {
	case FAKE_GARBAGE:
		send(conn, "garbage", 7, MSG_NOSIGNAL);
		break;
	case FAKE_HANGUP:
		break;
	case FAKE_BAD_MAGIC:
		rep.hdr.magic ^= 1;
		fake_reply_with_memfds(conn, &rep, sizeof(rep), 2);
		break;
	case FAKE_BAD_TYPE:
		rep.hdr.type = MOE_MSG_STATUS_REPLY;
		fake_reply_with_memfds(conn, &rep, sizeof(rep), 2);
		break;
	case FAKE_BAD_SIZE:
		rep.hdr.size++;
		fake_reply_with_memfds(conn, &rep, sizeof(rep), 2);
		break;
	case FAKE_LONG_REPLY: {
		char buf[sizeof(rep) + 8] = {0};

		memcpy(buf, &rep, sizeof(rep));
		fake_reply_with_memfds(conn, buf, sizeof(buf), 2);
		break;
	}
	case FAKE_WRONG_ABI:
		rep.abi_major++;
		fake_reply_with_memfds(conn, &rep, sizeof(rep), 2);
		break;
	case FAKE_TOO_MANY_FDS:
		rep.n_fds = 4;
		fake_reply_with_memfds(conn, &rep, sizeof(rep), 4);
		break;
	case FAKE_FD_COUNT_WRONG:
		rep.n_fds = 3;
		fake_reply_with_memfds(conn, &rep, sizeof(rep), 2);
		break;
	case FAKE_POSITIVE_STATUS:
		rep.status = 5;
		fake_reply_with_memfds(conn, &rep, sizeof(rep), 2);
		break;
	case FAKE_REFUSED:
		rep.status = -E2BIG;
		rep.n_fds = 0;
		send_with_fds(conn, &rep, sizeof(rep), NULL, 0);
		break;
	case FAKE_BOGUS_REGION:
		fake_reply_with_memfds(conn, &rep, sizeof(rep), 2);
		break;
	case FAKE_FDS_NOT_EVENTFD:
		/* A real region without the EVENTFD flag, but three fds. */
		d->extra_fd = true;
		fake_serve_region(d, conn, conn_no);
		break;
	case FAKE_INFO_UNSEALED:
		fake_serve_hand_region(d, conn, 0, F_SEAL_SHRINK | F_SEAL_GROW);
		break;
	case FAKE_INFO_WRITABLE:
		fake_serve_hand_region(d, conn, F_SEAL_SHRINK | F_SEAL_GROW,
				       F_SEAL_SHRINK | F_SEAL_GROW);
		break;
	case FAKE_RING_GROWABLE:
		fake_serve_hand_region(d, conn, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE,
				       F_SEAL_SHRINK);
		break;
	case FAKE_HAND_SEALED:
		fake_serve_hand_region(d, conn, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE,
				       F_SEAL_SHRINK | F_SEAL_GROW);
		break;
	case FAKE_AUTO:
	case FAKE_MANUAL:
		break;
	case FAKE_STATUS:
	case FAKE_STATUS_SHORT:
	case FAKE_STATUS_REFUSED:
		fake_serve_status(d, conn);
		break;
	}
	if (d->mode == FAKE_AUTO || d->mode == FAKE_MANUAL)
		fake_serve_region(d, conn, conn_no);
}

static void *fake_daemon_main(void *arg)
{
	struct fake_daemon *d = arg;

	for (unsigned i = 0; i < d->n_conns; i++) {
		int conn = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (conn < 0)
			break;
		fake_serve(d, conn, i);
		close(conn);
	}
	close(d->listen_fd);
	d->listen_fd = -1;
	return NULL;
}

static void fake_daemon_start(struct fake_daemon *d, enum fake_mode mode, unsigned n_conns)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	d->mode = mode;
	d->n_conns = n_conns;
	d->efd = -1;
	d->region = (struct shm_region){.info_fd = -1, .ring_fd = -1};
	d->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(d->listen_fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d->path);
	unlink(d->path);
	ASSERT_OK(bind(d->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0);
	ASSERT_OK(listen(d->listen_fd, 4) < 0 ? -errno : 0);
	ASSERT_EQ(pthread_create(&d->thread, NULL, fake_daemon_main, d), 0);
	d->running = true;
}

/* Stop the fake daemon's thread: it hangs up on its client and stops accepting. Idempotent. */
static void fake_daemon_stop(struct fake_daemon *d)
{
	if (!d->running)
		return;
	__atomic_store_n(&d->die, 1, __ATOMIC_RELEASE);
	pthread_join(d->thread, NULL);
	d->running = false;
	unlink(d->path);
}

/* ---- fixture ---- */

struct fixture {
	struct fake_daemon d;
	int fds_before;
	struct moe_client_opts opts;
	struct moe_client *c; /* connect_ok()'s, closed by teardown if a test failed */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->d.dir, sizeof(f->d.dir), "/tmp/moe-test-client-XXXXXX");
	if (!mkdtemp(f->d.dir)) {
		free(f);
		return -1;
	}
	snprintf(f->d.path, sizeof(f->d.path), "%s/moed.sock", f->d.dir);
	f->d.listen_fd = -1;
	moe_client_opts_init(&f->opts);
	f->opts.socket_path = f->d.path;
	f->opts.sq_entries = 8;
	f->opts.cq_entries = 16;
	f->opts.arena_size = 1 << 20;
	f->fds_before = test_count_open_fds();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	/*
	 * After a failed assertion: close the client (its hang-up ends the
	 * daemon's connection) and unblock an accept() waiting for a client
	 * that will not come, so no thread outlives the fixture it uses.
	 */
	moe_close(f->c);
	if (f->d.running && f->d.listen_fd >= 0)
		shutdown(f->d.listen_fd, SHUT_RDWR);
	fake_daemon_stop(&f->d);
	unlink(f->d.path);
	rmdir(f->d.dir);
	free(f);
	return 0;
}

/* Every test ends here: the daemon thread gone, and no fd leaked. */
static void assert_clean(struct fixture *f)
{
	ASSERT_EQ(test_count_open_fds(), f->fds_before);
}

/* Connect to the fake daemon in @mode; the region is set up when this returns. */
static struct moe_client *connect_ok(struct fixture *f, enum fake_mode mode, unsigned n_conns)
{
	struct moe_client *c = NULL;

	fake_daemon_start(&f->d, mode, n_conns);
	ASSERT_OK(moe_connect(&f->opts, &c));
	assert_non_null(c);
	assert_true(__atomic_load_n(&f->d.ready, __ATOMIC_ACQUIRE));
	f->c = c;
	return c;
}

static void close_client(struct fixture *f)
{
	moe_close(f->c);
	f->c = NULL;
}

/* ---- no daemon at all ---- */

static void test_version(void **state)
{
	char expect[32];

	(void)state;
	ASSERT_EQ(moe_version_number(), MOE_VERSION_NUMBER);
	snprintf(expect, sizeof(expect), "%d.%d.%d", MOE_VERSION_MAJOR, MOE_VERSION_MINOR,
		 MOE_VERSION_PATCH);
	assert_string_equal(moe_version_string(), expect);
}

struct strerror_args {
	const char *text;
};

static void *strerror_thread(void *arg)
{
	struct strerror_args *a = arg;

	for (int i = 0; i < 10000; i++)
		moe_strerror(-(i % 140));
	a->text = moe_strerror(-EIO);
	return NULL;
}

static void test_strerror(void **state)
{
	struct strerror_args a;
	pthread_t t;
	const char *eio;

	(void)state;
	assert_string_equal(moe_strerror(-ENOENT), strerrordesc_np(ENOENT));
	assert_string_equal(moe_strerror(ENOENT), strerrordesc_np(ENOENT));
	assert_string_equal(moe_strerror(0), strerrordesc_np(0));
	assert_non_null(strstr(moe_strerror(-EPROTONOSUPPORT), "ABI"));
	assert_non_null(strstr(moe_strerror(-ECONNRESET), "moe_reconnect"));
	assert_string_equal(moe_strerror(-100000), "Unknown error");
	assert_string_equal(moe_strerror(INT_MIN), "Unknown error");
	assert_string_equal(moe_strerror(INT_MAX), "Unknown error");

	/* Constant strings: another thread's calls never rewrite ours. */
	eio = moe_strerror(-EIO);
	ASSERT_EQ(pthread_create(&t, NULL, strerror_thread, &a), 0);
	for (int i = 0; i < 10000; i++)
		moe_strerror(-(i % 140));
	pthread_join(t, NULL);
	assert_ptr_equal(a.text, eio);
	assert_string_equal(eio, strerrordesc_np(EIO));
}

static void test_opts_and_request_init(void **state)
{
	struct moe_client_opts o;
	struct moe_request rq;

	(void)state;
	memset(&o, 0xa5, sizeof(o));
	moe_client_opts_init(&o);
	ASSERT_EQ(o.size, sizeof(o));
	assert_null(o.socket_path);
	assert_null(o.name);
	ASSERT_EQ(o.sq_entries, 64);
	ASSERT_EQ(o.cq_entries, 128);
	ASSERT_EQ(o.arena_size, 64ull << 20);
	ASSERT_EQ(o.spin_ns, 20000);
	moe_client_opts_init(NULL);

	memset(&rq, 0xa5, sizeof(rq));
	moe_request_init(&rq);
	ASSERT_EQ(rq.size, sizeof(rq));
	ASSERT_EQ(rq.user_data, 0);
	ASSERT_EQ(rq.flags, 0);
	ASSERT_EQ(rq.n_tokens, 0);
	assert_null(rq.input);
	assert_null(rq.output);
	assert_null(rq.route_expert);
	moe_request_init(NULL);
}

static void test_connect_nonexistent(void **state)
{
	struct fixture *f = *state;
	struct moe_client *c = (struct moe_client *)(uintptr_t)0x1;

	/* Nobody listens at the fixture's path. */
	ASSERT_ERRNO(moe_connect(&f->opts, &c), ENOENT);
	assert_ptr_equal(c, (struct moe_client *)(uintptr_t)0x1);

	/* $MOED_SOCKET when the options name no socket. */
	f->opts.socket_path = NULL;
	setenv("MOED_SOCKET", f->d.path, 1);
	ASSERT_ERRNO(moe_connect(&f->opts, &c), ENOENT);
	unsetenv("MOED_SOCKET");

	ASSERT_ERRNO(moe_daemon_status(f->d.path, (char **)&c), ENOENT);
	assert_clean(f);
}

static void test_connect_bad_opts(void **state)
{
	struct fixture *f = *state;
	struct moe_client_opts o;
	struct moe_client *c = NULL;
	char long_path[200];

	o = f->opts;
	o.sq_entries = 3;
	ASSERT_ERRNO(moe_connect(&o, &c), EINVAL);
	o = f->opts;
	o.sq_entries = 0;
	ASSERT_ERRNO(moe_connect(&o, &c), EINVAL);
	o = f->opts;
	o.cq_entries = 4; /* < sq_entries */
	ASSERT_ERRNO(moe_connect(&o, &c), EINVAL);
	o = f->opts;
	o.arena_size = 0;
	ASSERT_ERRNO(moe_connect(&o, &c), EINVAL);
	o = f->opts;
	o.size = 8;
	ASSERT_ERRNO(moe_connect(&o, &c), EINVAL);
	ASSERT_ERRNO(moe_connect(&f->opts, NULL), EINVAL);

	o = f->opts;
	memset(long_path, 'x', sizeof(long_path) - 1);
	long_path[sizeof(long_path) - 1] = '\0';
	o.socket_path = long_path;
	ASSERT_ERRNO(moe_connect(&o, &c), ENAMETOOLONG);
	assert_null(c);

	/* NULL-safe everywhere a client is taken. */
	moe_close(NULL);
	ASSERT_ERRNO(moe_reconnect(NULL), EINVAL);
	ASSERT_ERRNO(moe_submit(NULL, NULL), EINVAL);
	ASSERT_ERRNO(moe_reap(NULL, NULL, 0), EINVAL);
	ASSERT_ERRNO(moe_wait(NULL, NULL, 1, 0), EINVAL);
	ASSERT_ERRNO(moe_buf_alloc(NULL, 64, (void **)&c), EINVAL);
	moe_buf_free(NULL, NULL);
	assert_clean(f);
}

/* ---- a daemon that answers HELLO wrongly ---- */

static const struct {
	enum fake_mode mode;
	int expect;
	const char *what;
} bogus_cases[] = {
	{FAKE_GARBAGE, -EPROTO, "garbage"},
	{FAKE_HANGUP, -ECONNRESET, "hang-up without a reply"},
	{FAKE_BAD_MAGIC, -EPROTO, "wrong magic"},
	{FAKE_BAD_TYPE, -EPROTO, "wrong type"},
	{FAKE_BAD_SIZE, -EPROTO, "wrong hdr.size"},
	{FAKE_LONG_REPLY, -EPROTO, "longer message"},
	{FAKE_WRONG_ABI, -EPROTONOSUPPORT, "wrong ABI major"},
	{FAKE_TOO_MANY_FDS, -EPROTO, "4 fds"},
	{FAKE_FD_COUNT_WRONG, -EPROTO, "n_fds 3 with 2 fds"},
	{FAKE_FDS_NOT_EVENTFD, -EPROTO, "3 fds, no EVENTFD flag"},
	{FAKE_POSITIVE_STATUS, -EPROTO, "positive status"},
	{FAKE_REFUSED, -E2BIG, "refused"},
	{FAKE_BOGUS_REGION, -EPROTO, "empty memfds"},
	/* the daemon could shrink or rewrite them under our mappings (SIGBUS) */
	{FAKE_INFO_UNSEALED, -EPROTO, "unsealed info memfd"},
	{FAKE_INFO_WRITABLE, -EPROTO, "info memfd without F_SEAL_WRITE"},
	{FAKE_RING_GROWABLE, -EPROTO, "ring memfd without F_SEAL_GROW"},
};

static void test_connect_bogus_replies(void **state)
{
	struct fixture *f = *state;

	for (size_t i = 0; i < sizeof(bogus_cases) / sizeof(bogus_cases[0]); i++) {
		struct moe_client *c = NULL;
		int r;

		memset(&f->d.hello, 0, sizeof(f->d.hello));
		f->d.die = 0;
		f->d.eventfd = false;
		f->d.extra_fd = false;
		fake_daemon_start(&f->d, bogus_cases[i].mode, 1);
		r = moe_connect(&f->opts, &c);
		if (r != bogus_cases[i].expect)
			fail_msg("%s: moe_connect() = %d (%s), expected %d", bogus_cases[i].what,
				 r, moe_strerror(r), bogus_cases[i].expect);
		assert_null(c);
		fake_daemon_stop(&f->d);
		if (test_count_open_fds() != f->fds_before)
			fail_msg("%s: %d fds, %d before", bogus_cases[i].what, test_count_open_fds(),
				 f->fds_before);
	}
	assert_clean(f);
}

/*
 * The control for the seal cases of test_connect_bogus_replies: the same
 * hand-built region with moed's seals is accepted, so those refusals are
 * about the seals and nothing else.
 */
static void test_connect_hand_sealed_region(void **state)
{
	struct fixture *f = *state;
	struct moe_client *c = NULL;

	fake_daemon_start(&f->d, FAKE_HAND_SEALED, 1);
	ASSERT_OK(moe_connect(&f->opts, &c));
	assert_non_null(c);
	moe_close(c);
	fake_daemon_stop(&f->d);
	assert_clean(f);
}

static void test_hello_contents(void **state)
{
	struct fixture *f = *state;

	f->opts.name = "a-client-name-that-is-longer-than-31-bytes";
	connect_ok(f, FAKE_MANUAL, 1);
	ASSERT_EQ(f->d.hello_len, sizeof(struct moe_hello));
	ASSERT_EQ(f->d.hello.hdr.magic, MOE_PROTO_MAGIC);
	ASSERT_EQ(f->d.hello.hdr.type, MOE_MSG_HELLO);
	ASSERT_EQ(f->d.hello.hdr.size, sizeof(struct moe_hello));
	ASSERT_EQ(f->d.hello.abi_major, MOE_ABI_MAJOR);
	ASSERT_EQ(f->d.hello.abi_minor, MOE_ABI_MINOR);
	ASSERT_EQ(f->d.hello.flags, 0);
	ASSERT_EQ(f->d.hello.sq_entries, 8);
	ASSERT_EQ(f->d.hello.cq_entries, 16);
	ASSERT_EQ(f->d.hello.arena_size, 1 << 20);
	assert_memory_equal(f->d.hello.name, "a-client-name-that-is-longer-th", 32);
	close_client(f);
	fake_daemon_stop(&f->d);

	/* The default name is the program's. */
	f->opts.name = NULL;
	f->d.die = 0;
	connect_ok(f, FAKE_MANUAL, 1);
	assert_string_equal(f->d.hello.name, "test_client_api");
	close_client(f);
	fake_daemon_stop(&f->d);
	assert_clean(f);
}

static void test_model_info(void **state)
{
	struct fixture *f = *state;
	struct moe_client *c = connect_ok(f, FAKE_MANUAL, 1);
	struct moe_model_info mi;
	union {
		struct moe_model_info mi;
		unsigned char bytes[sizeof(struct moe_model_info)];
	} old;
	size_t old_size = offsetof(struct moe_model_info, n_layers);

	mi.size = sizeof(mi);
	ASSERT_OK(moe_model_info_get(c, &mi));
	ASSERT_EQ(mi.size, sizeof(mi));
	ASSERT_EQ(mi.d_model, FAKE_D_MODEL);
	ASSERT_EQ(mi.n_layers, FAKE_N_LAYERS);
	ASSERT_EQ(mi.max_tokens, FAKE_MAX_TOKENS);
	ASSERT_EQ(mi.max_experts, 8);
	ASSERT_EQ(mi.max_slots, 2);
	ASSERT_EQ(mi.client_id, FAKE_CLIENT_ID);
	ASSERT_EQ(mi.arena_size, 1 << 20);
	assert_string_equal(mi.model_name, "fake-model");

	/* An older caller's smaller struct: nothing past its size is written. */
	memset(&old, 0xa5, sizeof(old));
	old.mi.size = old_size;
	ASSERT_OK(moe_model_info_get(c, &old.mi));
	ASSERT_EQ(old.mi.d_model, FAKE_D_MODEL);
	for (size_t i = old_size; i < sizeof(old); i++)
		ASSERT_EQ(old.bytes[i], 0xa5);

	mi.size = 0;
	ASSERT_ERRNO(moe_model_info_get(c, &mi), EINVAL);
	ASSERT_ERRNO(moe_model_info_get(NULL, &mi), EINVAL);
	close_client(f);
	fake_daemon_stop(&f->d);
	assert_clean(f);
}

/* ---- a region, the test playing the daemon ---- */

static void test_submit_validation(void **state)
{
	struct fixture *f = *state;
	struct moe_client *c = connect_ok(f, FAKE_MANUAL, 1);
	const size_t row = FAKE_D_MODEL * sizeof(float);
	struct moe_request rq, bad;
	struct moe_sqe sqe;
	int32_t *ex, *counts;
	float *x, *y, *w, outside[FAKE_D_MODEL];
	uint8_t *base;

	ASSERT_OK(moe_buf_alloc(c, 4 * row, (void **)&x));
	ASSERT_OK(moe_buf_alloc(c, 4 * row, (void **)&y));
	ASSERT_OK(moe_buf_alloc(c, 4 * 2 * sizeof(int32_t), (void **)&ex));
	ASSERT_OK(moe_buf_alloc(c, 4 * 2 * sizeof(float), (void **)&w));
	ASSERT_OK(moe_buf_alloc(c, 8 * sizeof(int32_t), (void **)&counts));
	base = (uint8_t *)x; /* the first block sits at the arena's start */

	moe_request_init(&rq);
	rq.user_data = 0x1234;
	rq.layer = 1;
	rq.n_tokens = 4;
	rq.input = x;
	rq.output = y;

	bad = rq;
	bad.input = outside;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad = rq;
	bad.input = NULL;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad = rq;
	bad.output = y + 1; /* inside, not aligned to MOE_ARENA_ALIGN */
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad = rq;
	bad.layer = FAKE_N_LAYERS;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad = rq;
	bad.n_tokens = 0;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad = rq;
	bad.n_tokens = FAKE_MAX_TOKENS + 1;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad = rq;
	bad.input = (float *)(base + (1 << 20) - 2 * row); /* runs past the arena's end */
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad = rq;
	bad.flags = 1u << 7;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad = rq;
	bad.flags = MOE_REQ_ROUTE_GIVEN; /* route_k 0 */
	bad.route_expert = ex;
	bad.route_weight = w;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	/* the SQE holds route_k in 16 bits: no silent truncation to 0 */
	bad.route_k = 65536;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad.route_k = 2;
	bad.route_weight = NULL;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad.route_weight = w;
	bad.flags = MOE_REQ_ROUTE_GIVEN | MOE_REQ_ROUTE_RETURN;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad = rq;
	bad.flags = MOE_REQ_COUNTS_RETURN; /* no counts buffer */
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad.expert_counts = (int32_t *)(base + (1 << 20) - 16); /* max_experts 8: 32 bytes */
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	bad = rq;
	bad.size = sizeof(bad) - 1;
	ASSERT_ERRNO(moe_submit(c, &bad), EINVAL);
	/* Nothing reached the ring. */
	ASSERT_EQ(shm_ring_peek(&f->d.sq, UINT32_MAX), 0);

	/* A good one, with routing: the SQE names everything by arena offset. */
	rq.flags = MOE_REQ_ROUTE_RETURN | MOE_REQ_NO_MERGE;
	rq.route_k = 2;
	rq.route_expert = ex;
	rq.route_weight = w;
	ASSERT_OK(moe_submit(c, &rq));
	ASSERT_EQ(shm_ring_peek(&f->d.sq, UINT32_MAX), 1);
	shm_ring_copy_out(&f->d.sq, 0, &sqe);
	shm_ring_consume_release(&f->d.sq, 1);
	ASSERT_EQ(sqe.user_data, 0x1234);
	ASSERT_EQ(sqe.opcode, MOE_OP_FORWARD);
	ASSERT_EQ(sqe.reserved0, 0);
	ASSERT_EQ(sqe.flags, MOE_SQE_F_ROUTE_RETURN | MOE_SQE_F_NO_MERGE);
	ASSERT_EQ(sqe.layer, 1);
	ASSERT_EQ(sqe.n_tokens, 4);
	ASSERT_EQ(sqe.route_k, 2);
	ASSERT_EQ(sqe.in_off, 0);
	ASSERT_EQ(sqe.out_off, (uint8_t *)y - base);
	ASSERT_EQ(sqe.route_off, (uint8_t *)ex - base);
	ASSERT_EQ(sqe.weight_off, (uint8_t *)w - base);
	ASSERT_EQ(sqe.counts_off, 0);

	/* Without their flags the optional fields are 0 whatever the request holds. */
	rq.flags = MOE_REQ_ROUTE_GIVEN | MOE_REQ_COUNTS_RETURN;
	rq.expert_counts = counts;
	ASSERT_OK(moe_submit(c, &rq));
	rq.flags = 0;
	ASSERT_OK(moe_submit(c, &rq));
	ASSERT_EQ(shm_ring_peek(&f->d.sq, UINT32_MAX), 2);
	shm_ring_copy_out(&f->d.sq, 0, &sqe);
	ASSERT_EQ(sqe.flags, MOE_SQE_F_ROUTE_GIVEN | MOE_SQE_F_COUNTS_RETURN);
	ASSERT_EQ(sqe.counts_off, (uint8_t *)counts - base);
	shm_ring_copy_out(&f->d.sq, 1, &sqe);
	ASSERT_EQ(sqe.flags, 0);
	ASSERT_EQ(sqe.route_k, 0);
	ASSERT_EQ(sqe.route_off, 0);
	ASSERT_EQ(sqe.weight_off, 0);
	ASSERT_EQ(sqe.counts_off, 0);
	shm_ring_consume_release(&f->d.sq, 2);

	/* A full SQ: -EAGAIN, and nothing is overwritten. */
	for (int i = 0; i < 8; i++)
		ASSERT_OK(moe_submit(c, &rq));
	ASSERT_ERRNO(moe_submit(c, &rq), EAGAIN);
	ASSERT_EQ(shm_ring_peek(&f->d.sq, UINT32_MAX), 8);

	moe_buf_free(c, x);
	moe_buf_free(c, y);
	moe_buf_free(c, ex);
	moe_buf_free(c, w);
	moe_buf_free(c, counts);
	close_client(f);
	fake_daemon_stop(&f->d);
	assert_clean(f);
}

/* Post one CQE as the daemon. */
static void fake_post(struct fake_daemon *d, const struct moe_cqe *cqe)
{
	ASSERT_EQ(shm_ring_free_slots(&d->cq, 1) > 0, true);
	shm_ring_write(&d->cq, 0, cqe);
	if (shm_ring_publish(&d->cq, 1))
		shm_ring_wake_consumer(&d->cq);
}

static void test_wait_timeout_busy_and_reap(void **state)
{
	struct fixture *f = *state;
	struct moe_client *c;
	struct moe_completion done[4];
	struct moe_request rq;
	struct moe_cqe cqe = {
		.user_data = 77,
		.status = -EDOM,
		.flags = MOE_CQE_F_MERGED | MOE_CQE_F_Z_LOSS,
		.route_k = 2,
		.n_dropped = 3,
		.n_sanitized = 4,
		.aux_loss = 1.5f,
		.z_loss = 2.5f,
	};
	float *x;
	int64_t t0;

	f->opts.spin_ns = 1000000; /* 1 ms of spinning, then futex slices */
	c = connect_ok(f, FAKE_MANUAL, 1);
	ASSERT_OK(moe_buf_alloc(c, 4 * FAKE_D_MODEL * sizeof(float), (void **)&x));
	moe_request_init(&rq);
	rq.user_data = 77;
	rq.n_tokens = 1;
	rq.input = x;
	rq.output = x;

	ASSERT_EQ(moe_reap(c, done, 4), 0);
	ASSERT_EQ(moe_reap(c, NULL, 0), 0);
	ASSERT_ERRNO(moe_wait(c, done, 0, 0), EINVAL);
	ASSERT_ERRNO(moe_wait(c, done, 4, 0), ETIMEDOUT);

	ASSERT_OK(moe_submit(c, &rq));
	t0 = mono_ns();
	ASSERT_ERRNO(moe_wait(c, done, 4, 120 * 1000 * 1000), ETIMEDOUT);
	ASSERT_EQ(mono_ns() - t0 >= 120 * 1000 * 1000, true);
	ASSERT_EQ(mono_ns() - t0 < 2000ll * 1000 * 1000, true);
	ASSERT_ERRNO(moe_forward(c, &rq, done), EBUSY);

	/* The completion arrives; every field survives the trip. */
	fake_post(&f->d, &cqe);
	ASSERT_EQ(moe_wait(c, done, 4, 0), 1);
	ASSERT_EQ(done[0].user_data, 77);
	ASSERT_EQ(done[0].status, -EDOM);
	ASSERT_EQ(done[0].flags, MOE_COMPLETION_MERGED | MOE_COMPLETION_Z_LOSS);
	ASSERT_EQ(done[0].route_k, 2);
	ASSERT_EQ(done[0].n_dropped, 3);
	ASSERT_EQ(done[0].n_sanitized, 4);
	ASSERT_CLOSE(done[0].aux_loss, 1.5, 0, 0);
	ASSERT_CLOSE(done[0].z_loss, 2.5, 0, 0);
	ASSERT_EQ(moe_reap(c, done, 4), 0);

	/* Three ready, taken two and one. */
	for (int i = 0; i < 3; i++) {
		cqe.user_data = 100 + (uint64_t)i;
		fake_post(&f->d, &cqe);
	}
	ASSERT_EQ(moe_reap(c, done, 2), 2);
	ASSERT_EQ(done[0].user_data, 100);
	ASSERT_EQ(done[1].user_data, 101);
	ASSERT_EQ(moe_wait(c, done, 4, -1), 1);
	ASSERT_EQ(done[0].user_data, 102);

	close_client(f);
	fake_daemon_stop(&f->d);
	assert_clean(f);
}

/* A completion posted while the client sleeps on the CQ futex wakes it. */
struct late_post {
	struct fake_daemon *d;
	int64_t delay_ns;
};

static void *late_post_thread(void *arg)
{
	struct late_post *lp = arg;
	struct moe_cqe cqe = {.user_data = 5};

	usleep((useconds_t)(lp->delay_ns / 1000));
	fake_post(lp->d, &cqe);
	return NULL;
}

static void test_wait_wakes(void **state)
{
	struct fixture *f = *state;
	struct moe_client *c;
	struct moe_completion done;
	struct late_post lp;
	pthread_t t;
	int64_t t0;

	f->opts.spin_ns = 0; /* straight to the futex */
	c = connect_ok(f, FAKE_MANUAL, 1);
	lp = (struct late_post){.d = &f->d, .delay_ns = 20 * 1000 * 1000};
	ASSERT_EQ(pthread_create(&t, NULL, late_post_thread, &lp), 0);
	t0 = mono_ns();
	ASSERT_EQ(moe_wait(c, &done, 1, 5ll * 1000 * 1000 * 1000), 1);
	ASSERT_EQ(done.user_data, 5);
	ASSERT_EQ(mono_ns() - t0 < 2ll * 1000 * 1000 * 1000, true);
	pthread_join(t, NULL);
	/* The sleeper withdrew its NEED_WAKEUP. */
	ASSERT_EQ(f->d.region.cq_ctl->flags & MOE_RING_NEED_WAKEUP, 0);
	close_client(f);
	fake_daemon_stop(&f->d);
	assert_clean(f);
}

static void producer_waiting_case(struct fixture *f, bool eventfd)
{
	struct moe_client *c;
	struct moe_completion done;
	struct moe_cqe cqe = {.user_data = 9};
	uint32_t futex_before;
	uint64_t rung = 0;

	f->d.eventfd = eventfd;
	c = connect_ok(f, FAKE_MANUAL, 1);
	/* moed found the CQ full and stopped consuming the SQ. */
	fake_post(&f->d, &cqe);
	fetch_or_seq_cst(&f->d.region.cq_ctl->flags, MOE_RING_PRODUCER_WAITING);
	futex_before = load_acquire(&f->d.region.sq_ctl->futex);

	ASSERT_EQ(moe_reap(c, &done, 1), 1);
	ASSERT_EQ(load_seq_cst(&f->d.region.cq_ctl->flags) & MOE_RING_PRODUCER_WAITING, 0);
	if (eventfd) {
		ASSERT_EQ(read(f->d.efd, &rung, sizeof(rung)), sizeof(rung));
		ASSERT_EQ(rung, 1);
		ASSERT_EQ(load_acquire(&f->d.region.sq_ctl->futex), futex_before);
	} else {
		ASSERT_EQ(load_acquire(&f->d.region.sq_ctl->futex), futex_before + 1);
	}

	/* Without the bit, a reap rings nothing. */
	fake_post(&f->d, &cqe);
	ASSERT_EQ(moe_reap(c, &done, 1), 1);
	if (eventfd)
		ASSERT_EQ(read(f->d.efd, &rung, sizeof(rung)), -1);
	else
		ASSERT_EQ(load_acquire(&f->d.region.sq_ctl->futex), futex_before + 1);

	close_client(f);
	fake_daemon_stop(&f->d);
}

static void test_producer_waiting(void **state)
{
	struct fixture *f = *state;

	producer_waiting_case(f, false);
	f->d.die = 0;
	producer_waiting_case(f, true);
	assert_clean(f);
}

static void test_corrupted_ring(void **state)
{
	struct fixture *f = *state;
	struct moe_client *c = connect_ok(f, FAKE_MANUAL, 1);
	struct moe_completion done;
	struct moe_request rq;
	float *x;

	ASSERT_OK(moe_buf_alloc(c, FAKE_D_MODEL * sizeof(float), (void **)&x));
	moe_request_init(&rq);
	rq.n_tokens = 1;
	rq.input = x;
	rq.output = x;

	/* CQ seq words that do not say "position + 1" are no completions. */
	store_release(&f->d.region.cqes[0].seq, 2u);
	store_release(&f->d.region.cqes[1].seq, 1u);
	ASSERT_EQ(moe_reap(c, &done, 1), 0);
	ASSERT_EQ(moe_wait(c, &done, 1, 1000000), -ETIMEDOUT);
	/* An SQ head further ahead than the client ever submitted. */
	store_release(&f->d.region.sq_ctl->head, 17u);
	ASSERT_ERRNO(moe_submit(c, &rq), ECONNRESET);
	/* Dead from now on, even though the socket is fine. */
	ASSERT_ERRNO(moe_reap(c, &done, 1), ECONNRESET);
	ASSERT_ERRNO(moe_wait(c, &done, 1, -1), ECONNRESET);
	ASSERT_ERRNO(moe_forward(c, &rq, &done), ECONNRESET);
	/* Buffers need no daemon. */
	moe_buf_free(c, x);
	ASSERT_OK(moe_buf_alloc(c, 64, (void **)&x));

	close_client(f);
	fake_daemon_stop(&f->d);
	assert_clean(f);
}

/* ---- a region, the fake daemon consuming ---- */

static void forward_roundtrip(struct moe_client *c, float *x, float *y, uint32_t n_tokens,
			      float scale)
{
	struct moe_request rq;
	struct moe_completion done;

	for (uint32_t i = 0; i < n_tokens * FAKE_D_MODEL; i++) {
		x[i] = scale * (float)i;
		y[i] = -1.0f;
	}
	moe_request_init(&rq);
	rq.user_data = 0xfeed;
	rq.n_tokens = n_tokens;
	rq.input = x;
	rq.output = y;
	ASSERT_OK(moe_forward(c, &rq, &done));
	ASSERT_EQ(done.user_data, 0xfeed);
	ASSERT_EQ(done.status, 0);
	ASSERT_EQ(done.n_dropped, n_tokens);
	ASSERT_EQ(done.flags, MOE_COMPLETION_MERGED);
	for (uint32_t i = 0; i < n_tokens * FAKE_D_MODEL; i++)
		ASSERT_CLOSE(y[i], 2.0f * x[i], 0, 0);
}

static void forward_case(struct fixture *f, bool eventfd, uint64_t spin_ns)
{
	struct moe_client *c;
	struct moe_request rq[8];
	struct moe_completion done[8];
	float *x, *y;
	int got = 0;

	f->d.eventfd = eventfd;
	f->d.die = 0;
	f->opts.spin_ns = spin_ns;
	c = connect_ok(f, FAKE_AUTO, 1);
	ASSERT_OK(moe_buf_alloc(c, 8 * FAKE_D_MODEL * sizeof(float), (void **)&x));
	ASSERT_OK(moe_buf_alloc(c, 8 * FAKE_D_MODEL * sizeof(float), (void **)&y));

	for (int i = 0; i < 20; i++)
		forward_roundtrip(c, x, y, 8, (float)i);

	/*
	 * A burst of submissions, then waits until all are back. A full SQ
	 * (-EAGAIN: the daemon has not released a slot yet) is answered as a
	 * caller would, by waiting for completions.
	 */
	for (int i = 0; i < 8; i++) {
		int r;

		moe_request_init(&rq[i]);
		rq[i].user_data = 1000 + (uint64_t)i;
		rq[i].n_tokens = 1;
		rq[i].input = x + i * FAKE_D_MODEL;
		rq[i].output = y + i * FAKE_D_MODEL;
		while ((r = moe_submit(c, &rq[i])) == -EAGAIN) {
			r = moe_wait(c, done + got, 8 - (unsigned)got, 5ll * 1000 * 1000 * 1000);
			ASSERT_OK(r);
			got += r;
		}
		ASSERT_OK(r);
	}
	while (got < 8) {
		int r = moe_wait(c, done + got, 8 - (unsigned)got, 5ll * 1000 * 1000 * 1000);

		ASSERT_OK(r);
		got += r;
	}
	for (int i = 0; i < 8; i++)
		ASSERT_EQ(done[i].user_data, 1000 + (uint64_t)i);

	close_client(f);
	fake_daemon_stop(&f->d);
}

static void test_forward(void **state)
{
	struct fixture *f = *state;

	forward_case(f, false, 0);
	forward_case(f, false, 20000);
	forward_case(f, true, 0);
	forward_case(f, true, 1000000000); /* busy-poll */
	assert_clean(f);
}

static void test_daemon_death(void **state)
{
	struct fixture *f = *state;
	struct moe_client *c;
	struct moe_completion done;
	struct moe_request rq;
	float *x, *y;
	int64_t t0;

	f->opts.spin_ns = 0;
	c = connect_ok(f, FAKE_AUTO, 1);
	ASSERT_OK(moe_buf_alloc(c, FAKE_D_MODEL * sizeof(float), (void **)&x));
	ASSERT_OK(moe_buf_alloc(c, FAKE_D_MODEL * sizeof(float), (void **)&y));
	forward_roundtrip(c, x, y, 1, 1.0f);

	/* The daemon goes away, and its socket with it. */
	fake_daemon_stop(&f->d);

	/* An endless wait still learns within a bounded time. */
	t0 = mono_ns();
	ASSERT_ERRNO(moe_wait(c, &done, 1, -1), ECONNRESET);
	ASSERT_EQ(mono_ns() - t0 < 1000ll * 1000 * 1000, true);

	moe_request_init(&rq);
	rq.n_tokens = 1;
	rq.input = x;
	rq.output = x;
	ASSERT_ERRNO(moe_submit(c, &rq), ECONNRESET);
	ASSERT_ERRNO(moe_reap(c, &done, 1), ECONNRESET);
	ASSERT_ERRNO(moe_forward(c, &rq, &done), ECONNRESET);
	/* No daemon here any more. */
	ASSERT_ERRNO(moe_reconnect(c), ENOENT);
	ASSERT_ERRNO(moe_submit(c, &rq), ECONNRESET);

	close_client(f);
	assert_clean(f);
}

/* A daemon that hangs up while the client is in moe_forward(). */
static void *die_later_thread(void *arg)
{
	struct fake_daemon *d = arg;

	usleep(30 * 1000);
	__atomic_store_n(&d->die, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void test_reconnect(void **state)
{
	struct fixture *f = *state;
	struct moe_client *c;
	struct moe_model_info mi = {.size = sizeof(mi)};
	struct moe_completion done;
	struct moe_request rq;
	float *x, *y;
	pthread_t t;

	c = connect_ok(f, FAKE_MANUAL, 2);
	ASSERT_OK(moe_buf_alloc(c, 4 * FAKE_D_MODEL * sizeof(float), (void **)&x));
	ASSERT_OK(moe_buf_alloc(c, 4 * FAKE_D_MODEL * sizeof(float), (void **)&y));

	/* The daemon dies with a request in flight. */
	moe_request_init(&rq);
	rq.user_data = 3;
	rq.n_tokens = 4;
	rq.input = x;
	rq.output = y;
	ASSERT_EQ(pthread_create(&t, NULL, die_later_thread, &f->d), 0);
	ASSERT_ERRNO(moe_forward(c, &rq, &done), ECONNRESET);
	pthread_join(t, NULL);

	/* The fake daemon accepts a second connection: a restarted moed. */
	while (__atomic_load_n(&f->d.ready, __ATOMIC_ACQUIRE))
		usleep(1000);
	__atomic_store_n(&f->d.die, 0, __ATOMIC_RELEASE);
	f->d.mode = FAKE_AUTO;
	ASSERT_OK(moe_reconnect(c));
	ASSERT_OK(moe_model_info_get(c, &mi));
	ASSERT_EQ(mi.client_id, FAKE_CLIENT_ID + 1);
	/* Same addresses, new memory: the old buffers work (contents rewritten). */
	forward_roundtrip(c, x, y, 4, 3.0f);
	/* moe_forward's in-flight count started again from 0. */
	forward_roundtrip(c, x, y, 4, 5.0f);

	moe_buf_free(c, x);
	moe_buf_free(c, y);
	close_client(f);
	fake_daemon_stop(&f->d);
	assert_clean(f);
}

static void test_reconnect_mismatch(void **state)
{
	struct fixture *f = *state;
	struct moe_client *c;
	struct moe_completion done;
	struct moe_request rq;
	float *x, *y;

	/* The restarted daemon hands out a smaller arena: the old addresses do not fit. */
	f->d.arena_size[1] = 1 << 19;
	c = connect_ok(f, FAKE_MANUAL, 3);
	ASSERT_OK(moe_buf_alloc(c, FAKE_D_MODEL * sizeof(float), (void **)&x));
	ASSERT_OK(moe_buf_alloc(c, FAKE_D_MODEL * sizeof(float), (void **)&y));
	__atomic_store_n(&f->d.die, 1, __ATOMIC_RELEASE);
	ASSERT_ERRNO(moe_wait(c, &done, 1, -1), ECONNRESET);
	while (__atomic_load_n(&f->d.ready, __ATOMIC_ACQUIRE))
		usleep(1000);
	__atomic_store_n(&f->d.die, 0, __ATOMIC_RELEASE);

	ASSERT_ERRNO(moe_reconnect(c), EXDEV);
	moe_request_init(&rq);
	rq.n_tokens = 1;
	rq.input = x;
	rq.output = x;
	ASSERT_ERRNO(moe_submit(c, &rq), ECONNRESET);

	/* The third daemon is right again: the reservation survived the failure. */
	while (__atomic_load_n(&f->d.ready, __ATOMIC_ACQUIRE))
		usleep(1000);
	f->d.mode = FAKE_AUTO;
	ASSERT_OK(moe_reconnect(c));
	forward_roundtrip(c, x, y, 1, 1.0f);

	close_client(f);
	fake_daemon_stop(&f->d);
	assert_clean(f);
}

static void test_daemon_status(void **state)
{
	struct fixture *f = *state;
	char *json = (char *)(uintptr_t)0x1;

	fake_daemon_start(&f->d, FAKE_STATUS, 1);
	ASSERT_OK(moe_daemon_status(f->d.path, &json));
	assert_string_equal(json, FAKE_JSON);
	free(json);
	fake_daemon_stop(&f->d);

	json = (char *)(uintptr_t)0x1;
	f->d.die = 0;
	fake_daemon_start(&f->d, FAKE_STATUS_SHORT, 1);
	ASSERT_ERRNO(moe_daemon_status(f->d.path, &json), EPROTO);
	fake_daemon_stop(&f->d);

	f->d.die = 0;
	fake_daemon_start(&f->d, FAKE_STATUS_REFUSED, 1);
	ASSERT_ERRNO(moe_daemon_status(f->d.path, &json), EPERM);
	fake_daemon_stop(&f->d);

	/* A HELLO-speaking daemon's reply is no STATUS reply. */
	f->d.die = 0;
	fake_daemon_start(&f->d, FAKE_BAD_MAGIC, 1);
	ASSERT_ERRNO(moe_daemon_status(f->d.path, &json), EPROTO);
	fake_daemon_stop(&f->d);
	assert_ptr_equal(json, (char *)(uintptr_t)0x1);

	ASSERT_ERRNO(moe_daemon_status(f->d.path, NULL), EINVAL);
	assert_clean(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_opts_and_request_init),
		cmocka_unit_test_setup_teardown(test_connect_nonexistent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_bad_opts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_bogus_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_hand_sealed_region, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello_contents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_model_info, setup, teardown),
		cmocka_unit_test_setup_teardown(test_submit_validation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wait_timeout_busy_and_reap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wait_wakes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_producer_waiting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupted_ring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forward, setup, teardown),
		cmocka_unit_test_setup_teardown(test_daemon_death, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_daemon_status, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
