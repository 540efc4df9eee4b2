/* SPDX-License-Identifier: MIT */
/*
 * client_internal: the insides of struct moe_client, shared by libmoe's
 * source files and never installed. A client is one configuration (what it
 * asked moed for) plus one session (the socket, the region and the two ring
 * views of the current connection); moe_reconnect() replaces the session and
 * keeps the configuration and the arena's bookkeeping.
 *
 * Thread-safety: as struct moe_client, one thread at a time.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "moe.h"
#include "moe_proto.h"
#include "shm_region.h"
#include "shm_ring.h"

/* How long connect, HELLO and STATUS may block on a daemon that does not answer. */
#define CTL_HANDSHAKE_TIMEOUT_MS 10000
/* The most fds any reply carries (HELLO_REPLY with an eventfd doorbell). */
#define CTL_MAX_FDS 3
/* Bound on the JSON of moe_daemon_status(): a status is kilobytes, not this. */
#define CTL_STATUS_JSON_MAX (64ull << 20)

/* What the client asked for: kept to ask for the same again on reconnect. */
struct client_conf {
	char *socket_path; /* resolved once, at moe_connect() */
	char name[MOE_CLIENT_NAME_MAX];
	uint32_t sq_entries;
	uint32_t cq_entries;
	uint64_t arena_size;
	uint64_t spin_ns;
};

/* One connection to one moed. */
struct client_session {
	int sock;        /* control socket: its hang-up is the daemon's death */
	int doorbell_fd; /* eventfd doorbell (MOE_REGION_F_EVENTFD_DOORBELL), else -1 */
	struct shm_region region;
	struct shm_ring sq; /* we produce SQEs */
	struct shm_ring cq; /* we consume CQEs */
};

struct moe_client {
	struct client_conf conf;
	struct client_session session;
	struct arena arena;
	/*
	 * Set when the socket hung up or a ring was corrupted: every call that
	 * needs moed then returns -ECONNRESET until moe_reconnect() succeeds.
	 */
	bool dead;
	uint32_t in_flight; /* submitted and not yet reaped (moe_forward's -EBUSY) */
};

/* ---- client.c ---- */

/* Mark the client dead; always returns -ECONNRESET, for "return client_kill(c);". */
int client_kill(struct moe_client *c);

/*
 * Without blocking: has moed hung up? 0 while the socket looks alive, else
 * the client is marked dead and -ECONNRESET returned. One poll(2): call it
 * only off the fast path (moe_wait() between sleep slices).
 */
int client_check_alive(struct moe_client *c);

/* Tell moed there is new work in the SQ: futex bump and wake, or eventfd write. */
void client_doorbell_ring(struct moe_client *c);

/* ---- ctl.c: the control socket ---- */

/* @path, else $MOED_SOCKET, else MOE_DEFAULT_SOCKET. Never NULL. */
const char *ctl_socket_path_resolve(const char *path);

/*
 * A SOCK_SEQPACKET connection to @path with send and receive timeouts of
 * CTL_HANDSHAKE_TIMEOUT_MS. 0 and the fd in *@ret_fd, or -errno (-ENOENT,
 * -ECONNREFUSED: no daemon; -ENAMETOOLONG; -ETIMEDOUT).
 */
int ctl_socket_connect(const char *path, int *ret_fd);

/* Send one message. 0 or -errno. */
int ctl_msg_send(int fd, const void *msg, size_t size);

/*
 * Receive one message of exactly @size bytes into @buf, and the fds attached
 * to it (at most @max_fds <= CTL_MAX_FDS). 0, with the caller owning
 * @ret_fds[0 .. *@ret_n_fds); -EPROTO for a message of another length or too
 * many fds; -ECONNRESET when the peer hung up; -ETIMEDOUT; -errno. On error
 * every received fd has been closed and the out-parameters are untouched.
 * Validating the message's header is the caller's job.
 */
int ctl_msg_recv(int fd, void *buf, size_t size, int *ret_fds, unsigned max_fds,
		 unsigned *ret_n_fds);

/* Close @n fds; for error paths. */
void ctl_fds_close(int *fds, unsigned n);

/*
 * One request and its reply: send @req, receive a message of exactly
 * @reply_size bytes with at most @max_fds fds, and check the reply's header
 * (magic, @reply_type, size) and its status (the int32 after the header).
 * 0 with the caller owning @ret_fds[0 .. *@ret_n_fds); the daemon's -errno
 * when it refused; -EPROTO for a malformed reply; or as ctl_msg_recv(). On
 * error every received fd is closed.
 */
int ctl_call(int fd, const void *req, size_t req_size, uint16_t reply_type, void *reply,
	     size_t reply_size, int *ret_fds, unsigned max_fds, unsigned *ret_n_fds);
