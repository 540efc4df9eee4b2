/* SPDX-License-Identifier: MIT */
/*
 * transport_ucx: the transport over UCX; see transport.h.
 *
 * One context (active messages and wake-up events), one single-threaded
 * worker, at most one listener, one endpoint per connection, every endpoint
 * in error handling mode PEER: a peer that dies or resets fails its
 * endpoint (and its requests) instead of leaving them hanging, and a forced
 * close is allowed.
 *
 * "Connected". UCX has no callback for a client-server endpoint becoming
 * usable; ucp_ep_create() returns at once and sends simply wait. A flush of
 * the new endpoint completes once UCX's own wire-up is through, which says
 * little about the peer's daemon. So the client sends a small HELLO as the
 * endpoint's first message and the server's transport answers HELLO_ACK on
 * the accepted endpoint: on_connected means that the peer's transport
 * received a message from us and its answer came back, over the path the
 * daemon's messages take. Both carry WIRE_VERSION; a mismatch fails the
 * connection with -EPROTO on both sides.
 *
 * Receiving. Every message comes through one UCX AM handler (am_recv). Eager
 * data is in memory during the handler: transport_recv() copies it. For
 * rendezvous data (UCP_AM_RECV_ATTR_FLAG_RNDV) transport_recv() starts
 * ucp_am_recv_data_nbx() into the daemon's buffer. Data the daemon leaves is
 * dropped by returning UCS_OK from the handler: UCX releases an eager
 * descriptor then, and for a rendezvous it sends the sender its final
 * acknowledgement (ATS) without moving the data, so the sender's request
 * completes (with success: the message arrived, the daemon chose not to keep
 * its data) and nothing stays allocated on either side.
 *
 * Closing. transport_close() closes the endpoint with UCP_EP_CLOSE_FLAG_FORCE:
 * no flush, the endpoint's requests are purged with UCS_ERR_CANCELED. Inside
 * transport_progress() (a handler closing a connection, possibly the one
 * whose message it is handling) the endpoint is closed after UCX's progress
 * call returns, not from within UCX's callback; the number stops naming the
 * endpoint at once either way.
 */
#include "transport_ucx_internal.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "transport_addr.h"
#include "transport_ucx_status.h"

/* transport_free() gives the forced closes this long to complete before destroying the worker */
#define FREE_DRAIN_NS 2000000000ull

static struct ucx_transport *ucx(struct transport *t)
{
	return (struct ucx_transport *)t;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	const void *a = ss->ss_family == AF_INET6 ?
				(const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr :
				(const void *)&((const struct sockaddr_in *)ss)->sin_addr;

	if ((ss->ss_family != AF_INET && ss->ss_family != AF_INET6) ||
	    !inet_ntop(ss->ss_family, a, buf, (socklen_t)len))
		snprintf(buf, len, "?");
}

static void write_prefix(unsigned char *p, uint16_t kind, uint16_t id)
{
	uint16_t le_kind = htole16(kind), le_id = htole16(id);

	memcpy(p, &le_kind, 2);
	memcpy(p + 2, &le_id, 2);
}

static void read_prefix(const unsigned char *p, uint16_t *kind, uint16_t *id)
{
	uint16_t le_kind, le_id;

	memcpy(&le_kind, p, 2);
	memcpy(&le_id, p + 2, 2);
	*kind = le16toh(le_kind);
	*id = le16toh(le_id);
}

/*
 * Hand @r (its header already written) to UCX as an active message on @c.
 * 0: completed at once (@r is back in the pool), 1: UCX holds it, or -errno.
 */
static int am_send(struct ucx_transport *t, struct ucx_conn *c, struct ucx_req *r,
		   size_t header_len, const void *data, size_t data_len)
{
	ucp_request_param_t param = {
		.op_attr_mask = UCP_OP_ATTR_FIELD_REQUEST | UCP_OP_ATTR_FIELD_CALLBACK |
				UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE |
				UCP_OP_ATTR_FIELD_FLAGS,
		/* the receiver learns the connection from its reply endpoint */
		.flags = UCP_AM_SEND_FLAG_REPLY,
		.request = r,
		.cb.send = ucx_req_send_cb,
		.user_data = t,
		.datatype = ucp_dt_make_contig(1),
	};
	ucs_status_ptr_t sp;

	sp = ucp_am_send_nbx(c->ep, UCX_AM_ID, r->header, header_len, data, data_len, &param);
	if (UCS_PTR_IS_PTR(sp))
		return 1;
	ucx_req_put(t, r);
	return transport_ucx_errno(UCS_PTR_STATUS(sp));
}

/* A handshake message (HELLO or HELLO_ACK); its completion calls no handler. */
static int send_internal(struct ucx_transport *t, uint32_t conn, uint16_t kind)
{
	struct ucx_req *r = ucx_req_get(t);
	int ret;

	if (!r)
		return -ENOMEM;
	r->kind = REQ_INTERNAL;
	r->conn = conn;
	write_prefix(r->header, kind, WIRE_VERSION);
	ret = am_send(t, &t->conns[conn], r, WIRE_PREFIX, NULL, 0);
	return ret < 0 ? ret : 0;
}

static void close_ep(ucp_ep_h ep)
{
	const ucp_request_param_t param = {
		.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
		.flags = UCP_EP_CLOSE_FLAG_FORCE,
	};
	ucs_status_ptr_t sp = ucp_ep_close_nbx(ep, &param);

	/*
	 * UCX 1.13 completes a forced close at once (NULL); should a version
	 * return a request, UCX releases it when the close completes. An error
	 * means the endpoint's resources are released anyway.
	 */
	if (UCS_PTR_IS_PTR(sp))
		ucp_request_free(sp);
}

/* Forget @conn and close its endpoint now; the slot is free again. */
static void drop_conn(struct ucx_transport *t, uint32_t conn)
{
	struct ucx_conn *c = &t->conns[conn];

	if (c->state == CONN_OPEN)
		ucx_conn_forget(t, conn);
	else if (c->state == CONN_CLOSING)
		t->n_closing--;
	close_ep(c->ep);
	c->ep = NULL;
	c->state = CONN_FREE;
}

/* The endpoints that handlers closed during UCX's progress; the number closed. */
static int run_closes(struct ucx_transport *t)
{
	int n = 0;

	for (uint32_t i = 0; t->n_closing && i < TRANSPORT_MAX_CONNS; i++) {
		if (t->conns[i].state != CONN_CLOSING)
			continue;
		drop_conn(t, i);
		n++;
	}
	return n;
}

static void on_ep_error(void *arg, ucp_ep_h ep, ucs_status_t status)
{
	struct ucx_transport *t = arg;
	int conn = ucx_conn_find(t, ep);

	if (conn >= 0) /* else: closed by the daemon already */
		ucx_conn_fail(t, (uint32_t)conn, transport_ucx_errno(status));
}

static void got_hello(struct ucx_transport *t, uint32_t conn, uint16_t version)
{
	int r;

	/* answered even on a mismatch, so that the client learns it as well */
	r = send_internal(t, conn, WIRE_HELLO_ACK);
	if (r < 0)
		ucx_conn_fail(t, conn, r);
	else if (version != WIRE_VERSION)
		ucx_conn_fail(t, conn, -EPROTO);
}

static void got_hello_ack(struct ucx_transport *t, uint32_t conn, uint16_t version)
{
	struct ucx_conn *c = &t->conns[conn];

	if (!c->outbound || c->connected)
		return;
	if (version != WIRE_VERSION) {
		ucx_conn_fail(t, conn, -EPROTO);
		return;
	}
	c->connected = true;
	t->base.h.on_connected(t->base.h.ctx, conn);
}

struct transport_rx {
	struct ucx_transport *t;
	void *data; /* eager: the bytes; rendezvous: UCX's descriptor */
	size_t len;
	uint32_t conn, gen;
	bool rndv;
	bool taken;
};

static ucs_status_t am_recv(void *arg, const void *header, size_t header_len, void *data,
			    size_t len, const ucp_am_recv_param_t *param)
{
	struct ucx_transport *t = arg;
	struct transport_msg m;
	struct transport_rx rx;
	struct ucx_conn *c;
	uint16_t kind, id;
	int conn;

	/* Returning UCS_OK drops whatever the daemon did not take (see the top). */
	if (header_len < WIRE_PREFIX || !(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP))
		return UCS_OK; /* not from a moed transport */
	conn = ucx_conn_find(t, param->reply_ep);
	if (conn < 0)
		return UCS_OK; /* closed by the daemon: the message is late */
	c = &t->conns[conn];
	if (c->error)
		return UCS_OK; /* after on_conn_error a connection carries nothing */
	read_prefix(header, &kind, &id);
	switch (kind) {
	case WIRE_HELLO:
		got_hello(t, (uint32_t)conn, id);
		return UCS_OK;
	case WIRE_HELLO_ACK:
		got_hello_ack(t, (uint32_t)conn, id);
		return UCS_OK;
	case WIRE_MSG:
		break;
	default:
		return UCS_OK;
	}
	m = (struct transport_msg){
		.id = id,
		.header = (const unsigned char *)header + WIRE_PREFIX,
		.header_len = header_len - WIRE_PREFIX,
		.data_len = len,
	};
	rx = (struct transport_rx){
		.t = t,
		.data = data,
		.len = len,
		.conn = (uint32_t)conn,
		.gen = c->gen,
		.rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0,
	};
	t->base.h.on_message(t->base.h.ctx, (uint32_t)conn, &m, &rx);
	return UCS_OK;
}

static bool any_free_slot(const struct ucx_transport *t)
{
	for (uint32_t i = 0; i < TRANSPORT_MAX_CONNS; i++)
		if (t->conns[i].state == CONN_FREE)
			return true;
	return false;
}

static void on_conn_request(ucp_conn_request_h req, void *arg)
{
	struct ucx_transport *t = arg;
	ucp_conn_request_attr_t attr = { .field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR };
	char addr[INET6_ADDRSTRLEN] = "?";
	ucp_ep_params_t p = {
		.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST |
			      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER,
		.conn_request = req,
		.err_mode = UCP_ERR_HANDLING_MODE_PEER,
		.err_handler = { .cb = on_ep_error, .arg = t },
	};
	uint32_t conn;
	ucp_ep_h ep;

	if (ucp_conn_request_query(req, &attr) == UCS_OK)
		format_addr(&attr.client_address, addr, sizeof(addr));
	if (!any_free_slot(t)) {
		/* the client's endpoint fails with UCS_ERR_REJECTED: -ECONNREFUSED */
		ucp_listener_reject(t->listener, req);
		return;
	}
	/* on failure UCX has disposed of the request; the client's endpoint fails */
	if (ucp_ep_create(t->worker, &p, &ep) != UCS_OK)
		return;
	if (ucx_conn_add(t, ep, false, &conn) < 0) {
		close_ep(ep); /* cannot happen: a slot was free above */
		return;
	}
	t->base.h.on_accept(t->base.h.ctx, conn, addr);
}

static int ucx_listen(struct transport *base, const char *addr, uint16_t port,
		      uint16_t *ret_port)
{
	struct ucx_transport *t = ucx(base);
	ucp_listener_attr_t attr = { .field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR };
	struct sockaddr_storage ss;
	ucp_listener_params_t p = {
		.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR |
			      UCP_LISTENER_PARAM_FIELD_CONN_HANDLER,
		.conn_handler = { .cb = on_conn_request, .arg = t },
	};
	socklen_t len;
	ucs_status_t s;
	int r;

	if (t->listener)
		return -EALREADY;
	r = transport_sockaddr(addr, port, &ss, &len);
	if (r < 0)
		return r;
	p.sockaddr.addr = (const struct sockaddr *)&ss;
	p.sockaddr.addrlen = len;
	s = ucp_listener_create(t->worker, &p, &t->listener);
	if (s != UCS_OK) {
		t->listener = NULL;
		return transport_ucx_errno(s);
	}
	s = ucp_listener_query(t->listener, &attr);
	if (s != UCS_OK) {
		ucp_listener_destroy(t->listener);
		t->listener = NULL;
		return transport_ucx_errno(s);
	}
	if (ret_port)
		*ret_port = ntohs(attr.sockaddr.ss_family == AF_INET6 ?
					  ((struct sockaddr_in6 *)&attr.sockaddr)->sin6_port :
					  ((struct sockaddr_in *)&attr.sockaddr)->sin_port);
	return 0;
}

static int ucx_connect(struct transport *base, const char *addr, uint16_t port,
		       uint32_t *ret_conn)
{
	struct ucx_transport *t = ucx(base);
	struct sockaddr_storage ss;
	ucp_ep_params_t p = {
		.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
			      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER,
		.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER,
		.err_mode = UCP_ERR_HANDLING_MODE_PEER,
		.err_handler = { .cb = on_ep_error, .arg = t },
	};
	socklen_t len;
	ucs_status_t s;
	uint32_t conn;
	ucp_ep_h ep;
	int r;

	if (port == 0)
		return -EINVAL;
	r = transport_sockaddr(addr, port, &ss, &len);
	if (r < 0)
		return r;
	p.sockaddr.addr = (const struct sockaddr *)&ss;
	p.sockaddr.addrlen = len;
	s = ucp_ep_create(t->worker, &p, &ep);
	if (s != UCS_OK)
		return transport_ucx_errno(s);
	r = ucx_conn_add(t, ep, true, &conn);
	if (r < 0) {
		close_ep(ep);
		return r;
	}
	/* the first message on the endpoint: its answer is on_connected */
	r = send_internal(t, conn, WIRE_HELLO);
	if (r < 0) {
		drop_conn(t, conn);
		return r;
	}
	*ret_conn = conn;
	return 0;
}

static int ucx_send(struct transport *base, uint32_t conn, uint16_t id, const void *header,
		    size_t header_len, const void *data, size_t data_len, uint64_t cookie)
{
	struct ucx_transport *t = ucx(base);
	struct ucx_conn *c = ucx_conn_open(t, conn);
	struct ucx_req *r;
	int ret;

	if (!c || c->error)
		return -ENOTCONN;
	if (header_len > TRANSPORT_MAX_HEADER)
		return -EMSGSIZE;
	if ((header_len && !header) || (data_len && !data))
		return -EINVAL;
	r = ucx_req_get(t);
	if (!r)
		return -ENOMEM;
	r->kind = REQ_SEND;
	r->cookie = cookie;
	r->conn = conn;
	r->gen = c->gen;
	write_prefix(r->header, WIRE_MSG, id);
	if (header_len)
		memcpy(r->header + WIRE_PREFIX, header, header_len);
	ret = am_send(t, c, r, WIRE_PREFIX + header_len, data, data_len);
	if (ret == 1)
		c->inflight++;
	return ret;
}

static int ucx_recv(struct transport *base, struct transport_rx *rx, void *buf, size_t len,
		    uint64_t cookie)
{
	struct ucx_transport *t = ucx(base);
	ucp_request_param_t param = {
		.op_attr_mask = UCP_OP_ATTR_FIELD_REQUEST | UCP_OP_ATTR_FIELD_CALLBACK |
				UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE,
		.cb.recv_am = ucx_req_recv_cb,
		.user_data = t,
		.datatype = ucp_dt_make_contig(1),
	};
	struct ucx_conn *c;
	struct ucx_req *r;
	ucs_status_ptr_t sp;

	if (!rx || rx->t != t)
		return -EINVAL;
	if (rx->taken)
		return -EALREADY;
	if (len != rx->len || (len && !buf))
		return -EINVAL;
	c = ucx_conn_open(t, rx->conn);
	if (!c || c->gen != rx->gen)
		return -ENOTCONN; /* the handler closed the connection: its data goes */
	if (!len) {
		rx->taken = true;
		return 0;
	}
	if (!rx->rndv) {
		memcpy(buf, rx->data, len);
		rx->taken = true;
		return 0;
	}
	r = ucx_req_get(t);
	if (!r)
		return -ENOMEM;
	r->kind = REQ_RECV;
	r->cookie = cookie;
	r->conn = rx->conn;
	r->gen = rx->gen;
	param.request = r;
	/* From here UCX owns the descriptor, whatever the outcome. */
	rx->taken = true;
	sp = ucp_am_recv_data_nbx(t->worker, rx->data, buf, len, &param);
	if (UCS_PTR_IS_PTR(sp)) {
		c->inflight++;
		return 1;
	}
	ucx_req_put(t, r);
	return transport_ucx_errno(UCS_PTR_STATUS(sp));
}

static void ucx_close(struct transport *base, uint32_t conn)
{
	struct ucx_transport *t = ucx(base);
	struct ucx_conn *c = ucx_conn_open(t, conn);

	if (!c)
		return;
	if (!t->in_progress) {
		drop_conn(t, conn);
		return;
	}
	/* maybe inside a UCX callback on this very endpoint: close it once UCX returns */
	ucx_conn_forget(t, conn);
	c->state = CONN_CLOSING;
	t->n_closing++;
}

static int ucx_progress(struct transport *base)
{
	struct ucx_transport *t = ucx(base);
	int n = 0;

	if (t->in_progress)
		return 0; /* called from a handler: the outer call goes on */
	t->in_progress = true;
	for (;;) {
		int k = (int)ucp_worker_progress(t->worker);

		k += run_closes(t);
		k += ucx_req_drain(t);
		if (!k)
			break;
		n += k;
	}
	t->in_progress = false;
	return n;
}

static int ucx_arm(struct transport *base)
{
	struct ucx_transport *t = ucx(base);
	ucs_status_t s;

	if (t->n_closing || ucx_req_pending(t))
		return -EAGAIN;
	s = ucp_worker_arm(t->worker);
	if (s == UCS_ERR_BUSY)
		return -EAGAIN;
	return transport_ucx_errno(s);
}

static int ucx_event_fd(const struct transport *base)
{
	return ((const struct ucx_transport *)base)->efd;
}

static void ucx_free(struct transport *base)
{
	struct ucx_transport *t = ucx(base);
	uint64_t deadline;

	t->freeing = true; /* what completes from here calls no handler */
	t->in_progress = true;
	if (t->listener)
		ucp_listener_destroy(t->listener);
	t->listener = NULL;
	for (uint32_t i = 0; i < TRANSPORT_MAX_CONNS; i++)
		if (t->conns[i].state != CONN_FREE)
			drop_conn(t, i);
	/*
	 * The forced closes purge every request, some only once UCX's lanes are
	 * discarded: progress until UCX gave every request back (bounded, so that
	 * a stuck transport cannot hang the daemon's exit), so that the worker is
	 * destroyed with nothing of ours in it.
	 */
	deadline = now_ns() + FREE_DRAIN_NS;
	while (t->reqs_out && now_ns() < deadline) {
		ucp_worker_progress(t->worker);
		ucx_req_drain(t);
	}
	while (ucp_worker_progress(t->worker))
		;
	ucp_worker_destroy(t->worker);
	ucx_req_drain(t);
	ucp_cleanup(t->context);
	ucx_req_free_all(t);
	free(t);
}

static const struct transport_ops ucx_ops = {
	.listen = ucx_listen,
	.connect = ucx_connect,
	.send = ucx_send,
	.recv = ucx_recv,
	.close = ucx_close,
	.progress = ucx_progress,
	.arm = ucx_arm,
	.event_fd = ucx_event_fd,
	.free = ucx_free,
};

/* Destroy what transport_ucx_new() made so far; returns @r. */
static int new_failed(struct ucx_transport *t, int r)
{
	if (t->worker)
		ucp_worker_destroy(t->worker);
	if (t->context)
		ucp_cleanup(t->context);
	free(t);
	return r;
}

/* Say which UCX call failed in @why; returns the status as -errno. */
static int why_ucx(char *why, size_t why_len, const char *call, ucs_status_t s)
{
	if (why && why_len)
		snprintf(why, why_len, "UCX: %s: %s", call, ucs_status_string(s));
	return transport_ucx_errno(s);
}

int transport_ucx_new(const struct transport_handlers *h, struct transport **ret_t,
		      char *why, size_t why_len)
{
	const struct transport_ucx_opts o = { .eager_only = false };

	return transport_ucx_new_opts(&o, h, ret_t, why, why_len);
}

int transport_ucx_new_opts(const struct transport_ucx_opts *o,
			   const struct transport_handlers *h, struct transport **ret_t, char *why,
			   size_t why_len)
{
	ucp_params_t cp = {
		.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME,
		.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP,
		.name = "moed",
	};
	ucp_worker_params_t wp = {
		.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_EVENTS,
		.thread_mode = UCS_THREAD_MODE_SINGLE,
		.events = UCP_WAKEUP_RX | UCP_WAKEUP_TX,
	};
	ucp_context_attr_t ca = { .field_mask = UCP_ATTR_FIELD_REQUEST_SIZE };
	ucp_worker_attr_t wa = { .field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER };
	ucp_am_handler_param_t ap = {
		.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
			      UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG,
		.id = UCX_AM_ID,
		.flags = UCP_AM_FLAG_WHOLE_MSG,
		.cb = am_recv,
	};
	struct ucx_transport *t;
	ucp_config_t *config;
	ucs_status_t s;

	if (why && why_len)
		why[0] = '\0';
	if (!h || !h->on_connected || !h->on_accept || !h->on_conn_error || !h->on_message ||
	    !h->on_send_done || !h->on_recv_done) {
		if (why && why_len)
			snprintf(why, why_len, "every transport handler is required");
		return -EINVAL;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		if (why && why_len)
			snprintf(why, why_len, "no memory for the transport");
		return -ENOMEM;
	}
	t->base.ops = &ucx_ops;
	t->base.h = *h;
	t->efd = -1;
	ucx_conns_init(t);

	s = ucp_config_read(NULL, NULL, &config);
	if (s != UCS_OK)
		return new_failed(t, why_ucx(why, why_len, "ucp_config_read", s));
	/*
	 * A daemon restarted after a crash must listen on its port again at
	 * once, while the dead one's connections still sit in TIME_WAIT: UCX
	 * leaves SO_REUSEADDR off unless told. UCX_CM_REUSEADDR in the
	 * environment still wins.
	 */
	if (!getenv("UCX_CM_REUSEADDR"))
		ucp_config_modify(config, "CM_REUSEADDR", "y");
	/* see transport_ucx_opts.eager_only; UCX_RNDV_THRESH in the environment still wins */
	if (o->eager_only && !getenv("UCX_RNDV_THRESH"))
		ucp_config_modify(config, "RNDV_THRESH", "inf");
	s = ucp_init(&cp, config, &t->context);
	ucp_config_release(config);
	if (s != UCS_OK) {
		t->context = NULL;
		return new_failed(t, why_ucx(why, why_len, "ucp_init", s));
	}
	s = ucp_context_query(t->context, &ca);
	if (s != UCS_OK)
		return new_failed(t, why_ucx(why, why_len, "ucp_context_query", s));
	t->ucp_req_size = (ca.request_size + 63) & ~(size_t)63;
	s = ucp_worker_create(t->context, &wp, &t->worker);
	if (s != UCS_OK) {
		t->worker = NULL;
		return new_failed(t, why_ucx(why, why_len, "ucp_worker_create", s));
	}
	/* the contract promises TRANSPORT_MAX_HEADER bytes after our prefix */
	s = ucp_worker_query(t->worker, &wa);
	if (s != UCS_OK)
		return new_failed(t, why_ucx(why, why_len, "ucp_worker_query", s));
	if (wa.max_am_header < WIRE_PREFIX + TRANSPORT_MAX_HEADER) {
		if (why && why_len)
			snprintf(why, why_len,
				 "UCX: the transports in use carry AM headers of %zu bytes, "
				 "%u needed",
				 wa.max_am_header, WIRE_PREFIX + TRANSPORT_MAX_HEADER);
		return new_failed(t, -EMSGSIZE);
	}
	s = ucp_worker_get_efd(t->worker, &t->efd);
	if (s != UCS_OK)
		return new_failed(t, why_ucx(why, why_len, "ucp_worker_get_efd", s));
	ap.arg = t;
	s = ucp_worker_set_am_recv_handler(t->worker, &ap);
	if (s != UCS_OK)
		return new_failed(t, why_ucx(why, why_len, "ucp_worker_set_am_recv_handler", s));
	*ret_t = &t->base;
	return 0;
}
