/* SPDX-License-Identifier: MIT */
/* accept_wait: accept, or stop; see accept_wait.h. */
#include "control/accept_wait.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>

int accept_wait(int listen_fd, int stop_fd, int timeout_ms, int flags)
{
	struct pollfd p[2] = { { .fd = listen_fd, .events = POLLIN },
			       { .fd = stop_fd, .events = POLLIN } };
	int n = poll(p, 2, timeout_ms), fd;

	if (n < 0 && errno != EINTR)
		return -ECANCELED;
	if (n <= 0)
		return -EAGAIN;
	if (p[1].revents)
		return -ECANCELED;
	if (!(p[0].revents & POLLIN))
		return -EAGAIN;
	fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | flags);
	if (fd >= 0)
		return fd;
	if (errno == EMFILE || errno == ENFILE)
		poll(&p[1], 1, 100); /* the connection stays queued: do not spin on it */
	return -EAGAIN;
}
