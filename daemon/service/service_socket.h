/* SPDX-License-Identifier: MIT */
/*
 * service_socket: the file descriptors systemd hands moed at start
 * (sd_listen_fds(3), with their names):
 *
 *   - the control socket, with moed.socket (socket activation): systemd
 *     listens on the path before moed runs, so a client that connects while
 *     moed starts (or restarts) waits in the backlog instead of failing, and
 *     the socket's owner, group and mode are the unit's (SocketUser=,
 *     SocketGroup=, SocketMode=), not moed's socket_mode. The socket stays
 *     systemd's: moed neither chmods nor removes it.
 *   - the expert store's objects that a previous moed gave the fd store
 *     (FDSTORE=1, named "store.nodeN"; service_notify_fdstore), which a
 *     restarted moed re-attaches when their files are gone.
 */
#pragma once

#include <stddef.h>

#include "util/diag.h"

/* More node objects than any topology has (TOPOLOGY_MAX_NODES). */
#define SERVICE_STORE_FDS_MAX 64

/* The fd store's name of node index @n's object, into @buf. */
void service_store_fd_name(unsigned n, char *buf, size_t size);

struct service_fds {
	int control;                      /* the listening socket, or -1 (not activated) */
	char control_path[4096];          /* its path */
	int store[SERVICE_STORE_FDS_MAX]; /* node n's kept object, or -1 */
	unsigned n_store;                 /* how many are set */
	unsigned n_unused;                /* fds of other names (or a second of a node): closed */
};

/*
 * Take what systemd passed (LISTEN_FDS, for this pid; the variables are
 * removed from the environment). Nothing passed is fine (control -1, no
 * store fds). -EINVAL, with the reason in @d and every fd closed, when
 * systemd passed something moed cannot use: more than one socket, or one
 * that is not a listening AF_UNIX SOCK_SEQPACKET socket bound to a path.
 * An fd of another name is closed and counted in n_unused.
 */
int service_fds_take(struct service_fds *ret, struct diag *d);

/* Close the store fds (the store has copies of what it used). */
void service_fds_close_store(struct service_fds *f);
