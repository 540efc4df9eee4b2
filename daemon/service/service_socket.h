/* SPDX-License-Identifier: MIT */
/*
 * service_socket: the control socket handed over by systemd (socket
 * activation, sd_listen_fds(3)). With moed.socket, systemd listens on the
 * path before moed runs: a client that connects while moed starts (or
 * restarts) waits in the backlog instead of failing, and the socket's
 * owner, group and mode are the unit's (SocketUser=, SocketGroup=,
 * SocketMode=), not moed's socket_mode. The socket stays systemd's: moed
 * neither chmods nor removes it.
 */
#pragma once

#include <stddef.h>

#include "util/diag.h"

/*
 * The listening socket from LISTEN_FDS, taken over (non-blocking,
 * close-on-exec; the variables are removed from the environment), with its
 * path in @path. -ENOENT when moed was not socket-activated (no LISTEN_FDS
 * for this pid): moed makes its own. -EINVAL, with the reason in @d, when
 * systemd passed something moed cannot serve on: not exactly one fd, or not
 * a listening AF_UNIX SOCK_SEQPACKET socket bound to a path (the fds are
 * closed); -ENAMETOOLONG when the path does not fit @size.
 */
int service_listen_socket(char *path, size_t size, struct diag *d);
