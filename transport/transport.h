/* SPDX-License-Identifier: MIT */
/*
 * transport: messages between moed daemons on different hosts.
 *
 * A small interface of our own, an ops table, so that the daemon's peer
 * logic is written once against it and its unit tests can inject failures
 * with a fake (the Nth send fails, a message arrives twice or late). One
 * real implementation: UCX (transport_ucx.c), one context and one worker
 * per daemon, a listener, and an endpoint per connection.
 *
 * Connections. Each side opens its own connection to every peer it sends
 * requests to (transport_connect) and answers requests on the connection
 * they came in on (an accepted one, announced by on_accept). A connection
 * is a small integer, valid from connect/on_accept until the daemon calls
 * transport_close() on it; after on_conn_error it carries nothing more.
 *
 * Messages are active messages: a kind (id), a small header that always
 * arrives whole in on_message, and optional data. Small data travels with
 * the header (eager); large data follows a rendezvous, so the receiver can
 * size and place the buffer from the header before the bytes move (token
 * counts first, then rows). The receiver takes the data with
 * transport_recv() during on_message, or leaves it, which discards it.
 *
 * Progress. Nothing runs behind the caller's back: every callback is called
 * from transport_progress() on the caller's thread. The event loop follows
 * UCX's own progress/arm protocol:
 *
 *     for (;;) {
 *         while (transport_progress(t) > 0) ;
 *         if (transport_arm(t) == -EAGAIN) continue;  // events came in: progress again
 *         wait until transport_event_fd(t) is readable
 *     }
 *
 * Errors are -errno everywhere (the UCX status codes are mapped in one
 * place, transport_ucx_status.c).
 *
 * Thread-safety: none. One thread (moed's reactor) makes every call.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest header of one message (it travels with UCX's eager protocol). */
#define TRANSPORT_MAX_HEADER 1024
/* Connections one transport holds at once (outbound and accepted). */
#define TRANSPORT_MAX_CONNS 256

struct transport;
/* A message's pending data, valid during on_message only. */
struct transport_rx;

struct transport_msg {
	uint16_t id;            /* the message kind, the daemon's own numbering */
	const void *header;     /* valid during on_message only, not aligned: copy it out */
	size_t header_len;
	size_t data_len;        /* bytes that transport_recv() can take */
};

struct transport_handlers {
	void *ctx;
	/* An outbound connection is usable (from transport_progress()). */
	void (*on_connected)(void *ctx, uint32_t conn);
	/*
	 * A peer connected to our listener; @conn is the new connection and
	 * @remote_addr the peer's numeric IP address (no port; "?" if unknown).
	 */
	void (*on_accept)(void *ctx, uint32_t conn, const char *remote_addr);
	/*
	 * A connection failed (peer gone, unreachable, reset) with -errno.
	 * Sends and receives still in flight on it finish with an error first.
	 * The daemon calls transport_close() on it when it is done with it.
	 */
	void (*on_conn_error)(void *ctx, uint32_t conn, int status);
	/* A message arrived on @conn; see transport_recv() for its data. */
	void (*on_message)(void *ctx, uint32_t conn, const struct transport_msg *m,
			   struct transport_rx *rx);
	/* A send that returned 1 finished: 0, or -errno (the data was not delivered). */
	void (*on_send_done)(void *ctx, uint64_t cookie, int status);
	/* A receive that returned 1 finished: 0 (the buffer holds the data) or -errno. */
	void (*on_recv_done)(void *ctx, uint64_t cookie, int status);
};

struct transport_ops {
	int (*listen)(struct transport *t, const char *addr, uint16_t port, uint16_t *ret_port);
	int (*connect)(struct transport *t, const char *addr, uint16_t port, uint32_t *ret_conn);
	int (*send)(struct transport *t, uint32_t conn, uint16_t id, const void *header,
		    size_t header_len, const void *data, size_t data_len, uint64_t cookie);
	int (*recv)(struct transport *t, struct transport_rx *rx, void *buf, size_t len,
		    uint64_t cookie);
	void (*close)(struct transport *t, uint32_t conn);
	int (*progress)(struct transport *t);
	int (*arm)(struct transport *t);
	int (*event_fd)(const struct transport *t);
	void (*free)(struct transport *t);
};

/* Every implementation's struct begins with this. */
struct transport {
	const struct transport_ops *ops;
	struct transport_handlers h;
};

/*
 * The UCX transport (transport_ucx.c): a context and a worker with wake-up
 * events, no listener yet. 0 or -errno; @why gets a line for the log on
 * failure. UCX's own environment (UCX_TLS, UCX_NET_DEVICES, ...) applies.
 */
int transport_ucx_new(const struct transport_handlers *h, struct transport **ret_t,
		      char *why, size_t why_len);

struct transport_ucx_opts {
	/*
	 * Send every message eagerly (UCX fragments large ones and hands the
	 * receiver the whole message, so transport_recv() returns 0), never
	 * by rendezvous. For moed's peers: UCX 1.13 (Debian 12) aborts in
	 * ucp_ep_req_purge (ucp_ep.c:3318, "req->send.uct.func !=
	 * ucp_rndv_progress_rma_get_zcopy") when an endpoint fails while a
	 * rendezvous receive reads from it, which is what a requester that
	 * gave up and closed does to a peer that was hung (SIGSTOP) under its
	 * request: the peer daemon died. Eager messages fail cleanly.
	 */
	bool eager_only;
};

/* The same with options (transport_ucx_new: all false). */
int transport_ucx_new_opts(const struct transport_ucx_opts *o,
			   const struct transport_handlers *h, struct transport **ret_t, char *why,
			   size_t why_len);

/*
 * Accept connections on @addr:@port (@port 0: any free port, returned in
 * @ret_port, which may be NULL). @addr is a numeric IPv4 or IPv6 address;
 * "0.0.0.0" for every interface. 0 or -errno.
 */
static inline int transport_listen(struct transport *t, const char *addr, uint16_t port,
				   uint16_t *ret_port)
{
	return t->ops->listen(t, addr, port, ret_port);
}

/*
 * Open a connection to the listener at @addr:@port. Returns 0 with the
 * connection in @ret_conn at once; on_connected or on_conn_error follows.
 * Messages may be sent before on_connected (they wait for the connection).
 */
static inline int transport_connect(struct transport *t, const char *addr, uint16_t port,
				    uint32_t *ret_conn)
{
	return t->ops->connect(t, addr, port, ret_conn);
}

/*
 * Send message @id with @header (<= TRANSPORT_MAX_HEADER bytes) and @data.
 * @header is copied before it returns (the UCX transport keeps it in its
 * request), so it may live on the caller's stack. Returns 0 when the send
 * completed at once (@data is free again), 1 when it is in flight (@data
 * must stay untouched until on_send_done(@cookie), which a later
 * transport_progress() calls once, with an error if the connection is
 * closed or fails first, unless transport_free() drops it), or -errno
 * (nothing was sent, no callback).
 */
static inline int transport_send(struct transport *t, uint32_t conn, uint16_t id,
				 const void *header, size_t header_len, const void *data,
				 size_t data_len, uint64_t cookie)
{
	return t->ops->send(t, conn, id, header, header_len, data, data_len, cookie);
}

/*
 * Take the data of the message being delivered (only inside on_message),
 * @len == its data_len, into @buf. Returns 0 when @buf holds it already,
 * 1 when it arrives later (on_recv_done(@cookie); @buf must stay valid),
 * or -errno (the data is discarded). Not calling it discards the data.
 */
static inline int transport_recv(struct transport *t, struct transport_rx *rx, void *buf,
				 size_t len, uint64_t cookie)
{
	return t->ops->recv(t, rx, buf, len, cookie);
}

/*
 * Close @conn at once (no flush: moed closes a connection when it gave up
 * on it). Sends and receives in flight on it finish with -ECANCELED (or
 * another error) from a later transport_progress(). The number may be
 * reused by a later connect or accept.
 */
static inline void transport_close(struct transport *t, uint32_t conn)
{
	t->ops->close(t, conn);
}

/*
 * Make progress; calls the handlers. The number of events handled (0: idle).
 * Called from a handler it does nothing and returns 0.
 */
static inline int transport_progress(struct transport *t)
{
	return t->ops->progress(t);
}

/*
 * Arm the event fd before waiting: 0 when armed (wait on the fd), -EAGAIN
 * when events are pending (progress again first), or another -errno.
 */
static inline int transport_arm(struct transport *t)
{
	return t->ops->arm(t);
}

/* The fd that becomes readable when an armed transport has events. */
static inline int transport_event_fd(const struct transport *t)
{
	return t->ops->event_fd(t);
}

/*
 * Close every connection and free. What was in flight is dropped without a
 * handler call: the buffers are free again when it returns. Not from a
 * handler. NULL-safe; returns NULL.
 */
static inline struct transport *transport_free(struct transport *t)
{
	if (t)
		t->ops->free(t);
	return NULL;
}
