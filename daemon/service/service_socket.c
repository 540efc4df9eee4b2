/* SPDX-License-Identifier: MIT */
/* service_socket: the control socket from socket activation; see service_socket.h. */
#include "service/service_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

static void close_passed(int n)
{
	for (int i = 0; i < n; i++)
		close(SD_LISTEN_FDS_START + i);
}

/* The path @fd is bound to; -EINVAL for an unnamed or abstract socket. */
static int bound_path(int fd, char *path, size_t size, struct diag *d)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	size_t n;

	memset(&sa, 0, sizeof(sa));
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return diag_set(d, -errno, "socket activation: getsockname: %s", strerror(errno));
	if (len <= offsetof(struct sockaddr_un, sun_path) || sa.sun_path[0] == '\0')
		return diag_set(d, -EINVAL,
				"socket activation: the socket is not bound to a path (an "
				"abstract or unnamed socket); use ListenSequentialPacket=/PATH");
	n = strnlen(sa.sun_path, sizeof(sa.sun_path));
	if (n >= size)
		return diag_set(d, -ENAMETOOLONG, "socket activation: socket path too long");
	memcpy(path, sa.sun_path, n);
	path[n] = '\0';
	return 0;
}

int service_listen_socket(char *path, size_t size, struct diag *d)
{
	int n = sd_listen_fds(1), fd = SD_LISTEN_FDS_START, flags, r;

	if (n < 0)
		return diag_set(d, -EINVAL, "socket activation: LISTEN_FDS: %s", strerror(-n));
	if (n == 0)
		return -ENOENT;
	if (n != 1) {
		close_passed(n);
		return diag_set(d, -EINVAL,
				"socket activation: systemd passed %d file descriptors; moed "
				"takes exactly one, its control socket (ListenSequentialPacket=)",
				n);
	}
	r = sd_is_socket_unix(fd, SOCK_SEQPACKET, 1, NULL, 0);
	if (r <= 0) {
		close_passed(n);
		return diag_set(d, -EINVAL,
				"socket activation: the file descriptor systemd passed is not a "
				"listening AF_UNIX SOCK_SEQPACKET socket (ListenSequentialPacket=)");
	}
	r = bound_path(fd, path, size, d);
	if (r < 0) {
		close_passed(n);
		return r;
	}
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		r = diag_set(d, -errno, "socket activation: fcntl: %s", strerror(errno));
		close_passed(n);
		return r;
	}
	return fd;
}
