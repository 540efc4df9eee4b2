/* SPDX-License-Identifier: MIT */
/* service_socket: what systemd passed at start; see service_socket.h. */
#include "service/service_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#define STORE_FD_PREFIX "store.node"

void service_store_fd_name(unsigned n, char *buf, size_t size)
{
	snprintf(buf, size, STORE_FD_PREFIX "%u", n);
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

/* Node index of a store fd's name, or -1 for another name. */
static int store_index(const char *name)
{
	char *end;
	unsigned long n;

	if (!name || strncmp(name, STORE_FD_PREFIX, strlen(STORE_FD_PREFIX)) != 0)
		return -1;
	errno = 0;
	n = strtoul(name + strlen(STORE_FD_PREFIX), &end, 10);
	if (errno || *end || end == name + strlen(STORE_FD_PREFIX) || n >= SERVICE_STORE_FDS_MAX)
		return -1;
	return (int)n;
}

static int take_control(struct service_fds *f, int fd, struct diag *d)
{
	int flags, r;

	if (f->control >= 0)
		return diag_set(d, -EINVAL,
				"socket activation: systemd passed more than one socket; moed "
				"takes exactly one, its control socket (ListenSequentialPacket=)");
	if (sd_is_socket_unix(fd, SOCK_SEQPACKET, 1, NULL, 0) <= 0)
		return diag_set(d, -EINVAL,
				"socket activation: the file descriptor systemd passed is not a "
				"listening AF_UNIX SOCK_SEQPACKET socket (ListenSequentialPacket=)");
	r = bound_path(fd, f->control_path, sizeof(f->control_path), d);
	if (r < 0)
		return r;
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return diag_set(d, -errno, "socket activation: fcntl: %s", strerror(errno));
	f->control = fd;
	return 0;
}

int service_fds_take(struct service_fds *f, struct diag *d)
{
	char **names = NULL;
	int n, r = 0;

	*f = (struct service_fds){ .control = -1 };
	for (unsigned i = 0; i < SERVICE_STORE_FDS_MAX; i++)
		f->store[i] = -1;
	n = sd_listen_fds_with_names(1, &names);
	if (n < 0)
		return diag_set(d, -EINVAL, "LISTEN_FDS: %s", strerror(-n));
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i, node = store_index(names ? names[i] : NULL);

		/* every fd from here on is moed's alone: not for what it may execute */
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (r < 0) {
			close(fd);
		} else if (node >= 0 && f->store[node] < 0) {
			f->store[node] = fd;
			f->n_store++;
		} else if (node < 0 && sd_is_socket(fd, AF_UNIX, 0, -1) > 0) {
			r = take_control(f, fd, d);
			if (r < 0)
				close(fd);
		} else {
			f->n_unused++;
			close(fd);
		}
	}
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	if (r < 0) {
		if (f->control >= 0)
			close(f->control);
		service_fds_close_store(f);
		f->control = -1;
	}
	return r;
}

void service_fds_close_store(struct service_fds *f)
{
	for (unsigned i = 0; i < SERVICE_STORE_FDS_MAX; i++)
		if (f->store[i] >= 0) {
			close(f->store[i]);
			f->store[i] = -1;
		}
	f->n_store = 0;
}
