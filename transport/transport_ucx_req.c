/* SPDX-License-Identifier: MIT */
/*
 * transport_ucx_req: our requests and the queue of their completions; see
 * transport_ucx_internal.h.
 *
 * UCX calls a request's completion callback wherever it completes it: in
 * ucp_worker_progress(), but also inside ucp_ep_close_nbx() (a forced close
 * purges the endpoint's requests at once) or inside ucp_am_recv_data_nbx().
 * The contract promises the daemon every handler from transport_progress()
 * only, never from inside transport_close() or transport_recv(), so the
 * callbacks only queue the request, and transport_progress() calls the
 * handlers (ucx_req_drain). Work queued outside transport_progress() signals
 * the worker so that the event fd wakes the daemon for it.
 *
 * A connection's failure is announced after the operations that were in
 * flight on it (the contract: they finish with an error first). UCX
 * completes them itself: with UCP_ERR_HANDLING_MODE_PEER a failed endpoint's
 * requests are purged with an error, sometimes after its error callback
 * (when the transport's lanes take a while to discard), so on_conn_error
 * waits until the connection's count of those operations is back to zero.
 */
#include "transport_ucx_internal.h"

#include <stdlib.h>

#include "transport_ucx_status.h"

struct ucx_req *ucx_req_get(struct ucx_transport *t)
{
	struct ucx_req *r = t->free_reqs;

	if (r) {
		t->free_reqs = r->next;
	} else {
		void *block;

		/* UCX's request sits right before ours, aligned as UCX's own pool aligns it */
		if (posix_memalign(&block, 64, t->ucp_req_size + sizeof(*r)))
			return NULL;
		r = (struct ucx_req *)((char *)block + t->ucp_req_size);
		r->all_next = t->all_reqs;
		t->all_reqs = r;
	}
	r->next = NULL;
	r->cookie = 0;
	r->conn = 0;
	r->gen = 0;
	r->status = 0;
	r->kind = 0;
	t->reqs_out++;
	return r;
}

void ucx_req_put(struct ucx_transport *t, struct ucx_req *r)
{
	r->next = t->free_reqs;
	t->free_reqs = r;
	t->reqs_out--;
}

void ucx_req_free_all(struct ucx_transport *t)
{
	struct ucx_req *r = t->all_reqs, *next;

	for (; r; r = next) {
		next = r->all_next;
		free((char *)r - t->ucp_req_size);
	}
	t->all_reqs = t->free_reqs = NULL;
}

void ucx_wake(struct ucx_transport *t)
{
	/* inside transport_progress() the loop sees the work itself */
	if (!t->in_progress)
		ucp_worker_signal(t->worker);
}

static void complete(struct ucx_transport *t, struct ucx_req *r, ucs_status_t status)
{
	r->status = transport_ucx_errno(status);
	r->next = NULL;
	if (t->done_tail)
		t->done_tail->next = r;
	else
		t->done_head = r;
	t->done_tail = r;
	ucx_wake(t);
}

void ucx_req_send_cb(void *request, ucs_status_t status, void *user_data)
{
	complete(user_data, request, status);
}

void ucx_req_recv_cb(void *request, ucs_status_t status, size_t length, void *user_data)
{
	(void)length; /* a rendezvous receive fills exactly the data_len the daemon asked for */
	complete(user_data, request, status);
}

/* A failed open connection with nothing left in flight: its error can be announced. */
static bool error_ready(const struct ucx_conn *c)
{
	return c->state == CONN_OPEN && c->error_pending && !c->inflight;
}

bool ucx_req_pending(const struct ucx_transport *t)
{
	if (t->done_head)
		return true;
	for (uint32_t i = 0; t->n_error_pending && i < TRANSPORT_MAX_CONNS; i++)
		if (error_ready(&t->conns[i]))
			return true;
	return false;
}

int ucx_req_drain(struct ucx_transport *t)
{
	const struct transport_handlers *h = &t->base.h;
	struct ucx_req *r;
	int n = 0;

	/* A handler may send, receive or close: new completions join the queue's tail. */
	while ((r = t->done_head)) {
		struct ucx_conn *c = &t->conns[r->conn];
		uint64_t cookie = r->cookie;
		int status = r->status;
		uint8_t kind = r->kind;

		t->done_head = r->next;
		if (!t->done_head)
			t->done_tail = NULL;
		if (kind != REQ_INTERNAL && c->gen == r->gen && c->inflight)
			c->inflight--;
		ucx_req_put(t, r);
		n++;
		if (t->freeing)
			continue;
		if (kind == REQ_SEND)
			h->on_send_done(h->ctx, cookie, status);
		else if (kind == REQ_RECV)
			h->on_recv_done(h->ctx, cookie, status);
	}
	for (uint32_t i = 0; t->n_error_pending && i < TRANSPORT_MAX_CONNS; i++) {
		struct ucx_conn *c = &t->conns[i];

		if (!error_ready(c))
			continue;
		c->error_pending = false;
		t->n_error_pending--;
		n++;
		if (!t->freeing)
			h->on_conn_error(h->ctx, i, c->error);
	}
	return n;
}
