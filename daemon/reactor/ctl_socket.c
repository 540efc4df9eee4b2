/* SPDX-License-Identifier: MIT */
/*
 * ctl_socket: the control socket's side of the reactor: accepting, reading
 * each connection's first message, answering HELLO (a session and its
 * region) and STATUS (a JSON snapshot in a sealed memfd).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control/status.h"
#include "reactor/reactor_internal.h"
#include "session/hello.h"
#include "util/log.h"

int ctl_arm_accept(struct reactor *r)
{
	struct io_uring_sqe *sqe = reactor_get_sqe(r);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_accept(sqe, r->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	io_uring_sqe_set_data64(sqe, ud_make(UD_ACCEPT, 0, 0));
	return 0;
}

static int ctl_arm_recv(struct reactor *r, uint32_t slot)
{
	struct pending_conn *c = &r->conns[slot];
	struct io_uring_sqe *sqe = reactor_get_sqe(r);

	if (!sqe)
		return -EBUSY;
	/* MSG_TRUNC: the result is the message's real length, so an oversized one is seen */
	io_uring_prep_recv(sqe, c->fd, c->buf, sizeof(c->buf), MSG_TRUNC);
	io_uring_sqe_set_data64(sqe, ud_make(UD_CONN_RECV, slot, c->gen));
	return 0;
}

static void ctl_conn_close(struct reactor *r, uint32_t slot)
{
	struct pending_conn *c = &r->conns[slot];

	if (c->fd < 0)
		return;
	/*
	 * Its recv may still be pending in io_uring, which holds the socket
	 * open past close(): shut it down so the peer sees EOF now, and cancel
	 * the recv so the kernel lets go of it.
	 */
	shutdown(c->fd, SHUT_RDWR);
	reactor_cancel(r, ud_make(UD_CONN_RECV, slot, c->gen));
	close(c->fd);
	c->fd = -1;
	c->gen++;
}

void ctl_close_all_conns(struct reactor *r)
{
	for (uint32_t i = 0; i < r->n_conns; i++)
		ctl_conn_close(r, i);
}

void ctl_on_accept(struct reactor *r, int res)
{
	uint32_t slot;

	if (res < 0) {
		if (res != -ECANCELED)
			log_warning("accept: %s, ignoring", strerror(-res));
	} else if (r->stopping) {
		close(res);
	} else {
		for (slot = 0; slot < r->n_conns && r->conns[slot].fd >= 0; slot++)
			;
		if (slot == r->n_conns) {
			log_warning("too many connections waiting to say HELLO, closing one");
			close(res);
		} else {
			r->conns[slot].fd = res;
			r->conns[slot].t_accepted_ns = reactor_now_ns();
			if (ctl_arm_recv(r, slot) < 0)
				ctl_conn_close(r, slot);
		}
	}
	if (!r->stopping && ctl_arm_accept(r) < 0)
		log_error("cannot re-arm accept; no new clients will be served");
}

void ctl_expire_conns(struct reactor *r, uint64_t now_ns)
{
	uint64_t limit = (uint64_t)r->cfg->hello_timeout_ms * 1000000ull;

	for (uint32_t i = 0; i < r->n_conns; i++)
		if (r->conns[i].fd >= 0 && now_ns - r->conns[i].t_accepted_ns > limit) {
			log_info("connection said nothing for %u ms, closing",
				 r->cfg->hello_timeout_ms);
			ctl_conn_close(r, i); /* its recv completes with an error: stale */
		}
}

static int ctl_send_with_fds(int fd, void *msg, size_t len, const int *fds, unsigned n_fds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 3)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = msg, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (n_fds) {
		struct cmsghdr *cm;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * n_fds);
	}
	/* a fresh SEQPACKET socket has room for one small message: this does not block */
	n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EIO;
}

static void ctl_refuse(struct reactor *r, int fd, int status)
{
	struct moe_hello_reply rep = {
		.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_HELLO_REPLY,
			 .size = sizeof(rep) },
		.status = status,
		.abi_major = MOE_ABI_MAJOR,
		.abi_minor = MOE_ABI_MINOR,
		.max_arena_size = r->cfg->max_arena_bytes,
		.max_sq_entries = r->cfg->max_sq_entries,
		.max_tokens = r->cfg->max_tokens,
	};

	r->totals.clients_refused++;
	(void)ctl_send_with_fds(fd, &rep, sizeof(rep), NULL, 0);
}

static int ctl_free_client_slot(const struct reactor *r)
{
	for (uint32_t i = 0; i < r->cfg->max_clients; i++)
		if (!r->clients[i].s)
			return (int)i;
	return -EUSERS;
}

/* Turn connection @fd into a session; takes @fd over in every case. */
static void ctl_hello(struct reactor *r, int fd, const struct moe_hello *hello)
{
	struct moe_hello_reply rep = {
		.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_HELLO_REPLY,
			 .size = sizeof(rep) },
		.abi_major = MOE_ABI_MAJOR,
		.abi_minor = MOE_ABI_MINOR,
		.max_arena_size = r->cfg->max_arena_bytes,
		.max_sq_entries = r->cfg->max_sq_entries,
		.max_tokens = r->cfg->max_tokens,
	};
	struct ucred cred;
	socklen_t cred_len = sizeof(cred);
	struct session_params p;
	struct session *s;
	int fds[3], slot, ret;
	unsigned n_fds;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0) {
		log_warning("SO_PEERCRED: %m; refusing the client");
		ctl_refuse(r, fd, -EACCES);
		close(fd);
		return;
	}
	slot = ctl_free_client_slot(r);
	if (slot < 0) {
		log_warning("client pid %d refused: max_clients (%u) reached", (int)cred.pid,
			    r->cfg->max_clients);
		ctl_refuse(r, fd, slot);
		close(fd);
		return;
	}
	p = (struct session_params){ .hello = hello, .id = ++r->next_client_id, .sock = fd,
				     .pid = cred.pid, .uid = cred.uid,
				     .eventfd_doorbell = !r->futex_doorbells,
				     .model_info = &r->model_info };
	ret = session_new(&p, &s);
	if (ret < 0) {
		log_warning("client pid %d refused: cannot create its region: %s", (int)cred.pid,
			    strerror(-ret));
		ctl_refuse(r, fd, ret);
		close(fd);
		return;
	}
	n_fds = session_reply_fds(s, fds);
	rep.client_id = s->id;
	rep.n_fds = n_fds;
	ret = ctl_send_with_fds(fd, &rep, sizeof(rep), fds, n_fds);
	session_drop_info_fd(s);
	if (ret < 0) {
		log_warning("client pid %d: HELLO reply failed: %s", (int)cred.pid, strerror(-ret));
		session_end(s); /* closes fd */
		return;
	}
	r->clients[slot].s = s;
	r->n_clients++;
	r->totals.clients_served++;
	if (reactor_arm_client_watches(r, (uint32_t)slot) < 0) {
		reactor_drop_client(r, (uint32_t)slot, "could not be watched");
		return;
	}
	log_info("client %u (%s, pid %d, uid %d) connected: sq %u, cq %u, arena %llu bytes",
		 s->id, s->name, (int)s->pid, (int)s->uid, s->region.info.sq_entries,
		 s->region.info.cq_entries, (unsigned long long)s->region.info.arena_size);
}

/* Answer STATUS with a sealed memfd holding the JSON; takes @fd over. */
static void ctl_status(struct reactor *r, int fd)
{
	struct moe_status_reply rep = {
		.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_STATUS_REPLY,
			 .size = sizeof(rep) },
	};
	char *json = NULL;
	size_t len = 0;
	int mfd = -1, ret;

	ret = status_json(r, &json, &len);
	if (ret < 0)
		goto reply;
	mfd = memfd_create("moed-status", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0) {
		ret = -errno;
		goto reply;
	}
	if (write(mfd, json, len) != (ssize_t)len ||
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
		ret = -EIO;
		goto reply;
	}
	rep.json_size = len;
reply:
	rep.status = ret < 0 ? ret : 0;
	if (ctl_send_with_fds(fd, &rep, sizeof(rep), &mfd, ret < 0 ? 0 : 1) < 0)
		log_info("status reply not delivered, ignoring");
	if (mfd >= 0)
		close(mfd);
	free(json);
	close(fd);
}

void ctl_on_recv(struct reactor *r, uint32_t slot, uint32_t gen, int res)
{
	struct hello_limits lim = { .max_sq_entries = r->cfg->max_sq_entries,
				    .max_arena_bytes = r->cfg->max_arena_bytes };
	struct pending_conn *c;
	struct ctl_request req;
	const char *why = "";
	int fd, ret;

	if (slot >= r->n_conns)
		return;
	c = &r->conns[slot];
	if (c->fd < 0 || (c->gen & 0xffffffu) != gen)
		return; /* expired and closed meanwhile */
	fd = c->fd;
	c->fd = -1; /* the connection leaves the waiting list in every case */
	c->gen++;
	if (res <= 0 || r->stopping) {
		close(fd);
		return;
	}
	ret = ctl_request_parse(c->buf, res > CONN_BUF_SIZE ? (size_t)-1 : (size_t)res, &lim,
				&req, &why);
	if (ret < 0) {
		log_info("refusing a connection: %s (%s)", why, strerror(-ret));
		if (ret != -EPROTO)
			ctl_refuse(r, fd, ret);
		close(fd);
		return;
	}
	if (req.kind == CTL_REQUEST_STATUS)
		ctl_status(r, fd);
	else
		ctl_hello(r, fd, &req.hello);
}
