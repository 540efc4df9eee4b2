/* SPDX-License-Identifier: MIT */
/* ctl_reply: moed's replies on the control socket; see ctl_reply.h. */
#include "control/ctl_reply.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "moe_proto.h"

int ctl_send_with_fds(int fd, void *msg, size_t len, const int *fds, unsigned n_fds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 3)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = msg, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (n_fds > 3)
		return -EINVAL; /* the control buffer's room */
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

/* A sealed memfd holding @len bytes of @json, or -errno. */
static int json_memfd(const char *json, size_t len)
{
	int mfd = memfd_create("moed-status", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (mfd < 0)
		return -errno;
	if (write(mfd, json, len) != (ssize_t)len ||
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
		close(mfd);
		return -EIO;
	}
	return mfd;
}

int ctl_send_status(int fd, int status, const char *json, size_t len)
{
	struct moe_status_reply rep = {
		.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_STATUS_REPLY,
			 .size = sizeof(rep) },
	};
	int mfd = status < 0 ? status : json_memfd(json, len);
	int r;

	rep.status = mfd < 0 ? mfd : 0;
	rep.json_size = mfd < 0 ? 0 : len;
	r = ctl_send_with_fds(fd, &rep, sizeof(rep), &mfd, mfd < 0 ? 0 : 1);
	if (mfd >= 0)
		close(mfd);
	return r;
}
