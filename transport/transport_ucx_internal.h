/* SPDX-License-Identifier: MIT */
/*
 * transport_ucx_internal: the UCX transport's state, shared by its files:
 * transport_ucx.c (context, worker, listener, the ops), transport_ucx_conns.c
 * (the connection table and the endpoint -> connection map) and
 * transport_ucx_req.c (our requests and the queue of their completions).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <ucp/api/ucp.h>

#include "transport.h"

/*
 * The wire. Every message is one UCX active message on one UCX AM id whose
 * UCX header starts with a prefix of our own: a kind and a 16-bit id, both
 * little-endian. For WIRE_MSG the id is the daemon's and the daemon's header
 * follows; for the handshake (WIRE_HELLO, WIRE_HELLO_ACK) the id carries
 * WIRE_VERSION and nothing follows. One UCX id means that the daemon's ids
 * need no registration with UCX and any 16-bit value works.
 */
#define UCX_AM_ID      0
#define WIRE_PREFIX    4
#define WIRE_VERSION   1
enum wire_kind {
	WIRE_MSG = 1,
	WIRE_HELLO = 2,     /* client -> server, right after the endpoint is created */
	WIRE_HELLO_ACK = 3, /* server -> client: the peer is there, on_connected */
};

enum conn_state {
	CONN_FREE = 0,
	CONN_OPEN,    /* the daemon holds it (it may have failed: error != 0) */
	CONN_CLOSING, /* closed by the daemon inside progress: ep closed after UCX returns */
};

struct ucx_conn {
	ucp_ep_h ep;
	uint32_t gen;      /* bumped at close: completions of older operations don't count */
	uint32_t inflight; /* sends and receives of this generation that UCX still holds */
	int error;         /* -errno once the connection failed, else 0 */
	uint8_t state;     /* enum conn_state */
	bool outbound;
	bool connected;     /* outbound: the peer's HELLO_ACK arrived */
	bool error_pending; /* error set, on_conn_error not called yet */
};

enum req_kind {
	REQ_SEND = 1, /* a daemon's send: on_send_done */
	REQ_RECV,     /* a daemon's rendezvous receive: on_recv_done */
	REQ_INTERNAL, /* a handshake message: no callback */
};

/*
 * One operation that UCX holds: a request we allocate ourselves and hand to
 * UCX (UCP_OP_ATTR_FIELD_REQUEST), with UCX's own request right before it
 * (ucx_transport.ucp_req_size bytes). Owning it lets us fill in the cookie
 * before UCX can complete it, and keep the UCX header of a send in it: UCX
 * 1.13 reads that header until the send completes (1.14 added
 * UCP_AM_SEND_FLAG_COPY_HEADER), longer than the daemon's call lasts.
 */
struct ucx_req {
	struct ucx_req *next;     /* on the free list or the done queue */
	struct ucx_req *all_next; /* every request allocated, for the final free */
	uint64_t cookie;
	uint32_t conn, gen;
	int status; /* on completion: 0 or -errno */
	uint8_t kind;
	unsigned char header[WIRE_PREFIX + TRANSPORT_MAX_HEADER];
};

/* The endpoint -> connection map: open addressing, at most half full. */
#define EP_MAP_BITS 9
#define EP_MAP_SIZE (1u << EP_MAP_BITS)
_Static_assert(EP_MAP_SIZE >= 2 * TRANSPORT_MAX_CONNS, "the ep map must stay half empty");

struct ucx_transport {
	struct transport base;
	ucp_context_h context;
	ucp_worker_h worker;
	ucp_listener_h listener;
	int efd;
	size_t ucp_req_size; /* UCX's request size rounded up to 64: our request's offset */

	struct ucx_req *free_reqs;
	struct ucx_req *all_reqs;
	struct ucx_req *done_head, *done_tail; /* completed, handlers not called yet */
	uint32_t reqs_out;                     /* requests UCX holds or that are queued */

	uint32_t n_error_pending; /* connections with error_pending */
	uint32_t n_closing;       /* connections in CONN_CLOSING */
	uint32_t next_conn;       /* where the search for a free slot starts */
	bool in_progress;         /* inside transport_progress(): UCX and the handlers */
	bool freeing;             /* transport_free(): completions call no handler */

	struct ucx_conn conns[TRANSPORT_MAX_CONNS];
	int16_t ep_map[EP_MAP_SIZE]; /* a connection number, or -1 */
};

/* transport_ucx_conns.c */
void ucx_conns_init(struct ucx_transport *t);
/* A free slot, CONN_OPEN with @ep and in the map; -EMFILE when all are taken. */
int ucx_conn_add(struct ucx_transport *t, ucp_ep_h ep, bool outbound, uint32_t *ret_conn);
/* The open connection @conn (failed or not), or NULL. */
struct ucx_conn *ucx_conn_open(struct ucx_transport *t, uint32_t conn);
/* The connection of @ep still in the map (open, not closed), or -1. */
int ucx_conn_find(const struct ucx_transport *t, ucp_ep_h ep);
/* Take @conn out of the map and forget its state; the caller closes its ep. */
void ucx_conn_forget(struct ucx_transport *t, uint32_t conn);
/* Record a failure of @conn (the first one wins) for on_conn_error. */
void ucx_conn_fail(struct ucx_transport *t, uint32_t conn, int error);

/* transport_ucx_req.c */
struct ucx_req *ucx_req_get(struct ucx_transport *t);
void ucx_req_put(struct ucx_transport *t, struct ucx_req *r);
void ucx_req_free_all(struct ucx_transport *t);
/* UCX's completion callbacks, for ucp_request_param_t (user_data: the transport). */
void ucx_req_send_cb(void *request, ucs_status_t status, void *user_data);
void ucx_req_recv_cb(void *request, ucs_status_t status, size_t length, void *user_data);
/* Call the handlers of completed requests, then of failed connections; the number called. */
int ucx_req_drain(struct ucx_transport *t);
/* Whether a drain would call a handler now (transport_arm must not sleep then). */
bool ucx_req_pending(const struct ucx_transport *t);
/* Make the event fd readable: work was queued outside transport_progress(). */
void ucx_wake(struct ucx_transport *t);
