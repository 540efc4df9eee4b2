/* SPDX-License-Identifier: MIT */
/*
 * ctl: libmoe's side of moed's control socket (moe_proto.h): finding the
 * socket, connecting, and sending and receiving one SOCK_SEQPACKET message
 * with the fds attached to it. The daemon is a separate process that may be
 * buggy or an impostor, so a received message must have exactly the expected
 * length and no more fds than expected, and every fd the kernel installed is
 * closed on every error path.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "client_internal.h"

const char *ctl_socket_path_resolve(const char *path)
{
	const char *env;

	if (path)
		return path;
	/* secure_getenv: a set-uid caller must not be pointed at a socket by its invoker. */
	env = secure_getenv("MOED_SOCKET");
	if (env && env[0] != '\0')
		return env;
	return MOE_DEFAULT_SOCKET;
}

int ctl_socket_connect(const char *path, int *ret_fd)
{
	const struct timeval tv = {
		.tv_sec = CTL_HANDSHAKE_TIMEOUT_MS / 1000,
		.tv_usec = (CTL_HANDSHAKE_TIMEOUT_MS % 1000) * 1000,
	};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len;
	int fd, r;

	if (!path || !ret_fd)
		return -EINVAL;
	len = strlen(path);
	if (len == 0)
		return -EINVAL;
	if (len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, len + 1);

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/*
	 * A daemon that accepts and then never answers must not hang the
	 * caller forever. On AF_UNIX the send timeout also bounds connect()
	 * against a full backlog.
	 */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
		r = -errno;
		goto close_fd;
	}
	if (connect(fd, (const struct sockaddr *)&sa,
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1)) < 0) {
		r = errno == EAGAIN ? -ETIMEDOUT : -errno;
		goto close_fd;
	}
	*ret_fd = fd;
	return 0;

close_fd:
	close(fd);
	return r;
}

int ctl_msg_send(int fd, const void *msg, size_t size)
{
	ssize_t n;

	do
		n = send(fd, msg, size, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? -ETIMEDOUT : errno == EPIPE ? -ECONNRESET : -errno;
	/* SOCK_SEQPACKET sends a message whole or not at all. */
	if ((size_t)n != size)
		return -EPROTO;
	return 0;
}

void ctl_fds_close(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

int ctl_msg_recv(int fd, void *buf, size_t size, int *ret_fds, unsigned max_fds,
		 unsigned *ret_n_fds)
{
	/*
	 * Room for CTL_MAX_FDS; CMSG_SPACE rounds up, so a peer may squeeze in
	 * one more than that without MSG_CTRUNC: every SCM_RIGHTS fd is
	 * counted and collected below, whatever the buffer's nominal size.
	 */
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * (CTL_MAX_FDS + 1))];
	} control;
	int fds[CTL_MAX_FDS + 1];
	unsigned n_fds = 0;
	bool too_many = false;
	struct iovec iov = {.iov_base = buf, .iov_len = size};
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.buf,
		.msg_controllen = sizeof(control.buf),
	};
	struct cmsghdr *cmsg;
	ssize_t n;
	int r;

	if (max_fds > CTL_MAX_FDS)
		return -EINVAL;
	memset(&control, 0, sizeof(control));

	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? -ETIMEDOUT : -errno;

	/* Collect every fd first: each must be closed on any error below. */
	for (cmsg = CMSG_FIRSTHDR(&mh); cmsg; cmsg = CMSG_NXTHDR(&mh, cmsg)) {
		const unsigned char *data;
		size_t k;

		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		data = CMSG_DATA(cmsg);
		k = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t j = 0; j < k; j++) {
			int received;

			memcpy(&received, data + j * sizeof(int), sizeof(int));
			if (n_fds < max_fds) {
				fds[n_fds++] = received;
			} else {
				close(received);
				too_many = true;
			}
		}
	}

	if (n == 0) {
		/* EOF: moed hung up without answering (or sent an empty message). */
		r = -ECONNRESET;
		goto close_fds;
	}
	if (too_many || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || (size_t)n != size) {
		r = -EPROTO;
		goto close_fds;
	}
	memcpy(ret_fds, fds, n_fds * sizeof(int));
	*ret_n_fds = n_fds;
	return 0;

close_fds:
	ctl_fds_close(fds, n_fds);
	return r;
}

/*
 * The status of a reply: 0, the daemon's -errno when it is a plausible one,
 * else -EPROTO.
 */
static int ctl_reply_status(int32_t status)
{
	if (status == 0)
		return 0;
	/* Only a negative errno is a refusal; anything else is a broken reply. */
	if (status < 0 && status >= -4095)
		return status;
	return -EPROTO;
}

/* Every reply carries its status right after the header: ctl_call() reads it there. */
_Static_assert(offsetof(struct moe_hello_reply, status) == sizeof(struct moe_msg_header),
	       "hello_reply.status");
_Static_assert(offsetof(struct moe_expert_change_reply, status) == sizeof(struct moe_msg_header),
	       "expert_change_reply.status");
_Static_assert(offsetof(struct moe_status_reply, status) == sizeof(struct moe_msg_header),
	       "status_reply.status");

int ctl_call(int fd, const void *req, size_t req_size, uint16_t reply_type, void *reply,
	     size_t reply_size, int *ret_fds, unsigned max_fds, unsigned *ret_n_fds)
{
	struct moe_msg_header hdr;
	int fds[CTL_MAX_FDS];
	unsigned n_fds;
	int32_t status;
	int r;

	r = ctl_msg_send(fd, req, req_size);
	if (r < 0)
		return r;
	r = ctl_msg_recv(fd, reply, reply_size, fds, max_fds, &n_fds);
	if (r < 0)
		return r;
	memcpy(&hdr, reply, sizeof(hdr));
	if (hdr.magic != MOE_PROTO_MAGIC || hdr.type != reply_type || hdr.size != reply_size) {
		r = -EPROTO;
		goto close_fds;
	}
	memcpy(&status, (const uint8_t *)reply + sizeof(hdr), sizeof(status));
	r = ctl_reply_status(status);
	if (r < 0)
		goto close_fds;
	memcpy(ret_fds, fds, n_fds * sizeof(int));
	*ret_n_fds = n_fds;
	return 0;

close_fds:
	ctl_fds_close(fds, n_fds);
	return r;
}
