/* SPDX-License-Identifier: MIT */
/*
 * client: a libmoe client's life cycle. moe_connect() says HELLO on moed's
 * control socket, receives the region's memfds (and, from a daemon without
 * io_uring futex waits, an eventfd doorbell) with SCM_RIGHTS, maps them and
 * sets up its two ring views; moe_reconnect() does the same again at the old
 * addresses after moed restarted; moe_close() undoes it all. Also here: how
 * the client notices that moed is gone, and how it rings moed's doorbell.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_internal.h"
#include "moe_abi.h"

#define OPTS_DEFAULT_SQ_ENTRIES 64
#define OPTS_DEFAULT_CQ_ENTRIES 128
#define OPTS_DEFAULT_ARENA_SIZE (64ull << 20)
#define OPTS_DEFAULT_SPIN_NS 20000

MOE_API void moe_client_opts_init(struct moe_client_opts *opts)
{
	if (!opts)
		return;
	*opts = (struct moe_client_opts){
		.size = sizeof(*opts),
		.sq_entries = OPTS_DEFAULT_SQ_ENTRIES,
		.cq_entries = OPTS_DEFAULT_CQ_ENTRIES,
		.arena_size = OPTS_DEFAULT_ARENA_SIZE,
		.spin_ns = OPTS_DEFAULT_SPIN_NS,
	};
}

static bool is_pow2(uint32_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

/* Check @opts and copy what a reconnect must ask for again. */
static int client_conf_init(struct client_conf *conf, const struct moe_client_opts *opts)
{
	const char *name;
	size_t len;

	/* Version 1 is the first: a smaller struct is not an older caller but a bug. */
	if (opts->size < sizeof(*opts))
		return -EINVAL;
	if (!is_pow2(opts->sq_entries) || !is_pow2(opts->cq_entries) ||
	    opts->cq_entries < opts->sq_entries || opts->arena_size == 0)
		return -EINVAL;

	*conf = (struct client_conf){
		.sq_entries = opts->sq_entries,
		.cq_entries = opts->cq_entries,
		.arena_size = opts->arena_size,
		.spin_ns = opts->spin_ns,
	};
	name = opts->name ? opts->name : program_invocation_short_name;
	len = strnlen(name, sizeof(conf->name) - 1);
	memcpy(conf->name, name, len); /* NUL-padded by the initializer */

	conf->socket_path = strdup(ctl_socket_path_resolve(opts->socket_path));
	if (!conf->socket_path)
		return -ENOMEM;
	return 0;
}

static void client_conf_done(struct client_conf *conf)
{
	free(conf->socket_path);
	conf->socket_path = NULL;
}

static void client_session_init_empty(struct client_session *s)
{
	*s = (struct client_session){
		.sock = -1,
		.doorbell_fd = -1,
		.region = {.info_fd = -1, .ring_fd = -1},
	};
}

/*
 * Unmap the region, or release the range a detach left reserved, and close
 * everything; NULL-safe and idempotent.
 */
static void client_session_done(struct client_session *s)
{
	if (!s)
		return;
	if (s->region.sq_ctl) {
		shm_region_done(&s->region);
	} else if (s->region.ring) {
		/* Detached: shm_region.h leaves the reservation to us. */
		munmap(s->region.ring, (size_t)s->region.info.ring_size);
		s->region.ring = NULL;
	}
	if (s->doorbell_fd >= 0)
		close(s->doorbell_fd);
	s->doorbell_fd = -1;
	if (s->sock >= 0)
		close(s->sock);
	s->sock = -1;
}

/*
 * As client_session_done() but keeps the ring's address range reserved:
 * region.ring and region.info.ring_size then describe the reservation.
 */
static void client_session_detach(struct client_session *s)
{
	shm_region_detach_keep_range(&s->region);
	if (s->doorbell_fd >= 0)
		close(s->doorbell_fd);
	s->doorbell_fd = -1;
	if (s->sock >= 0)
		close(s->sock);
	s->sock = -1;
}

/* HELLO -> HELLO_REPLY: 0 with the reply and its fds (2 or 3), or -errno with none open. */
static int client_hello(int sock, const struct client_conf *conf, int *fds, unsigned *ret_n_fds)
{
	struct moe_hello hello = {
		.hdr = {.magic = MOE_PROTO_MAGIC, .type = MOE_MSG_HELLO, .size = sizeof(hello)},
		.abi_major = MOE_ABI_MAJOR,
		.abi_minor = MOE_ABI_MINOR,
		.flags = 0,
		.sq_entries = conf->sq_entries,
		.cq_entries = conf->cq_entries,
		.arena_size = conf->arena_size,
	};
	struct moe_hello_reply reply;
	unsigned n_fds;
	int r;

	memcpy(hello.name, conf->name, sizeof(hello.name));
	r = ctl_call(sock, &hello, sizeof(hello), MOE_MSG_HELLO_REPLY, &reply, sizeof(reply), fds,
		     CTL_MAX_FDS, &n_fds);
	if (r < 0)
		return r;
	if (reply.abi_major != MOE_ABI_MAJOR) {
		r = -EPROTONOSUPPORT;
		goto close_fds;
	}
	if (reply.n_fds != n_fds || n_fds < 2) {
		r = -EPROTO;
		goto close_fds;
	}
	*ret_n_fds = n_fds;
	return 0;

close_fds:
	ctl_fds_close(fds, n_fds);
	return r;
}

/*
 * Connect, say HELLO, map the region (at @fixed_addr when non-NULL: a
 * reconnect) and set up the ring views. 0 and the session in *@ret, or -errno
 * with nothing left open and any reserved range at @fixed_addr still reserved.
 */
static int client_session_open(const struct client_conf *conf, void *fixed_addr,
			       struct client_session *ret)
{
	struct client_session s;
	int fds[CTL_MAX_FDS];
	unsigned n_fds;
	bool eventfd_doorbell;
	int r;

	client_session_init_empty(&s);
	r = ctl_socket_connect(conf->socket_path, &s.sock);
	if (r < 0)
		return r;
	r = client_hello(s.sock, conf, fds, &n_fds);
	if (r < 0)
		goto close_sock;

	/* Takes the info and ring fds on success only. */
	r = shm_region_attach(fds[0], fds[1], fixed_addr, &s.region);
	if (r < 0)
		goto close_fds;
	fds[0] = fds[1] = -1;

	/* The reply's fd count and the info page must tell the same story. */
	eventfd_doorbell = (s.region.info.flags & MOE_REGION_F_EVENTFD_DOORBELL) != 0;
	if (n_fds != (eventfd_doorbell ? 3u : 2u)) {
		r = -EPROTO;
		goto done_region;
	}
	if (eventfd_doorbell) {
		s.doorbell_fd = fds[2];
		fds[2] = -1;
	}

	r = shm_ring_init(&s.sq, s.region.sq_ctl, s.region.sqes, s.region.info.sq_entries,
			  sizeof(struct moe_sqe), 0);
	if (r < 0)
		goto done_region;
	r = shm_ring_init(&s.cq, s.region.cq_ctl, s.region.cqes, s.region.info.cq_entries,
			  sizeof(struct moe_cqe), 0);
	if (r < 0)
		goto done_region;

	*ret = s;
	return 0;

done_region:
	/* On a reconnect, keep the old addresses reserved for the next attempt. */
	if (fixed_addr)
		client_session_detach(&s);
	else
		client_session_done(&s);
close_fds:
	ctl_fds_close(fds, n_fds);
close_sock:
	if (s.sock >= 0)
		close(s.sock);
	return r;
}

MOE_API int moe_connect(const struct moe_client_opts *opts, struct moe_client **ret_client)
{
	struct moe_client_opts defaults;
	struct moe_client *c;
	int r;

	if (!ret_client)
		return -EINVAL;
	if (!opts) {
		moe_client_opts_init(&defaults);
		opts = &defaults;
	}

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	client_session_init_empty(&c->session);
	r = client_conf_init(&c->conf, opts);
	if (r < 0)
		goto free_conf;
	r = client_session_open(&c->conf, NULL, &c->session);
	if (r < 0)
		goto free_conf;
	r = arena_init(&c->arena, c->session.region.arena, c->session.region.info.arena_size);
	if (r < 0) {
		/* -EINVAL: an arena that is empty or not ARENA_ALIGN-aligned. */
		r = r == -EINVAL ? -EPROTO : r;
		goto done_session;
	}
	*ret_client = c;
	return 0;

done_session:
	client_session_done(&c->session);
free_conf:
	client_conf_done(&c->conf);
	free(c);
	return r;
}

MOE_API void moe_close(struct moe_client *client)
{
	if (!client)
		return;
	/* Closing the socket is what tells moed we are gone. */
	client_session_done(&client->session);
	arena_done(&client->arena);
	client_conf_done(&client->conf);
	free(client);
}

MOE_API int moe_reconnect(struct moe_client *client)
{
	struct client_session s;
	uint8_t *old_ring;
	int r;

	if (!client || !client->session.region.ring)
		return -EINVAL;
	/* Still set after a detach: the reserved range (shm_region.h). */
	old_ring = client->session.region.ring;

	/*
	 * From here on the client is dead until a new session is in place. The
	 * old daemon's pages go away but their addresses stay reserved
	 * (PROT_NONE): a buffer the caller touches before this succeeds faults
	 * instead of silently landing in someone else's mapping.
	 */
	client->dead = true;
	client->in_flight = 0;
	client_session_detach(&client->session);

	r = client_session_open(&client->conf, old_ring, &s);
	if (r < 0)
		return r;
	/*
	 * The attach checked that the new ring fits the reservation; it must
	 * fill it exactly (else moe_close() could not release it in one
	 * piece), and the arena must sit at the same address with the same
	 * size, or the allocator's blocks would point at rings. The allocator
	 * remembers both.
	 */
	if (s.region.info.ring_size != client->session.region.info.ring_size ||
	    s.region.arena != client->arena.base ||
	    (s.region.info.arena_size & ~(uint64_t)(ARENA_ALIGN - 1)) != client->arena.usable) {
		/*
		 * Back to a reservation: the new, possibly smaller, ring
		 * becomes PROT_NONE again and the old region struct still
		 * describes the whole reserved range.
		 */
		client_session_detach(&s);
		return -EXDEV;
	}
	client->session = s;
	client->dead = false;
	return 0;
}

int client_kill(struct moe_client *c)
{
	c->dead = true;
	return -ECONNRESET;
}

int client_check_alive(struct moe_client *c)
{
	struct pollfd p = {.fd = c->session.sock, .events = POLLIN | POLLRDHUP};
	char byte;
	ssize_t n;
	int r;

	if (c->dead)
		return -ECONNRESET;
	do
		r = poll(&p, 1, 0);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return 0; /* quiet (a poll failure proves nothing either way) */
	if (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL))
		return client_kill(c);
	if (p.revents & POLLIN) {
		/*
		 * moed sends nothing after the HELLO reply, so readable means
		 * EOF; peek (never consume: an unexpected message might carry
		 * fds) to tell it from a message we do not know.
		 */
		n = recv(c->session.sock, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return client_kill(c);
	}
	return 0;
}

void client_doorbell_ring(struct moe_client *c)
{
	const uint64_t one = 1;
	ssize_t n;

	if (c->session.doorbell_fd < 0) {
		shm_ring_wake_consumer(&c->session.sq);
		return;
	}
	/*
	 * eventfd mode: moed reads the eventfd instead of waiting on the SQ
	 * futex. Only EAGAIN (counter at its maximum, so moed has a wake-up
	 * pending anyway) can fail here.
	 */
	do
		n = write(c->session.doorbell_fd, &one, sizeof(one));
	while (n < 0 && errno == EINTR);
}
