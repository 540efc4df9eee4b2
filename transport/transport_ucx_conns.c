/* SPDX-License-Identifier: MIT */
/*
 * transport_ucx_conns: the connection table and the map from a UCX endpoint
 * back to its connection; see transport_ucx_internal.h.
 *
 * Every incoming message names its endpoint (the reply endpoint, which the
 * sender requests with UCP_AM_SEND_FLAG_REPLY) and so does UCX's error
 * callback; the map turns it into the connection number in O(1): a message
 * can be a few hundred bytes, a table scan per message would cost more than
 * the rest of its handling. Open addressing with linear probing, removal by
 * backward shift (no tombstones), never more than half full.
 *
 * Slots are handed out round-robin from the last one given: a number the
 * daemon closed is reused as late as possible, so that a stale number in the
 * daemon is more likely to fail with -ENOTCONN than to reach another peer.
 */
#include "transport_ucx_internal.h"

#include <errno.h>
#include <string.h>

static uint32_t ep_home(ucp_ep_h ep)
{
	uint64_t v = (uint64_t)(uintptr_t)ep;

	/* Fibonacci hashing: the top bits of the product mix every bit of the pointer */
	return (uint32_t)((v * 0x9e3779b97f4a7c15ull) >> (64 - EP_MAP_BITS));
}

static void map_insert(struct ucx_transport *t, uint32_t conn)
{
	uint32_t i = ep_home(t->conns[conn].ep);

	while (t->ep_map[i] >= 0)
		i = (i + 1) & (EP_MAP_SIZE - 1);
	t->ep_map[i] = (int16_t)conn;
}

/* The map position of @ep, or -1. */
static int map_position(const struct ucx_transport *t, ucp_ep_h ep)
{
	for (uint32_t i = ep_home(ep);; i = (i + 1) & (EP_MAP_SIZE - 1)) {
		int c = t->ep_map[i];

		if (c < 0)
			return -1;
		if (t->conns[c].ep == ep)
			return (int)i;
	}
}

/* Remove position @i, moving up the entries of the run after it that may not skip the hole. */
static void map_remove_at(struct ucx_transport *t, uint32_t i)
{
	for (uint32_t j = (i + 1) & (EP_MAP_SIZE - 1); t->ep_map[j] >= 0;
	     j = (j + 1) & (EP_MAP_SIZE - 1)) {
		uint32_t home = ep_home(t->conns[t->ep_map[j]].ep);

		/* The entry at j may move to i unless its home lies cyclically in (i, j]. */
		if (i <= j ? (home > i && home <= j) : (home > i || home <= j))
			continue;
		t->ep_map[i] = t->ep_map[j];
		i = j;
	}
	t->ep_map[i] = -1;
}

void ucx_conns_init(struct ucx_transport *t)
{
	memset(t->conns, 0, sizeof(t->conns));
	for (uint32_t i = 0; i < EP_MAP_SIZE; i++)
		t->ep_map[i] = -1;
	t->next_conn = 0;
}

int ucx_conn_add(struct ucx_transport *t, ucp_ep_h ep, bool outbound, uint32_t *ret_conn)
{
	for (uint32_t k = 0; k < TRANSPORT_MAX_CONNS; k++) {
		uint32_t conn = (t->next_conn + k) % TRANSPORT_MAX_CONNS;
		struct ucx_conn *c = &t->conns[conn];

		if (c->state != CONN_FREE)
			continue;
		/* gen survives: completions of the slot's previous life must not count */
		c->ep = ep;
		c->inflight = 0;
		c->error = 0;
		c->state = CONN_OPEN;
		c->outbound = outbound;
		c->connected = false;
		c->error_pending = false;
		map_insert(t, conn);
		t->next_conn = (conn + 1) % TRANSPORT_MAX_CONNS;
		*ret_conn = conn;
		return 0;
	}
	return -EMFILE;
}

struct ucx_conn *ucx_conn_open(struct ucx_transport *t, uint32_t conn)
{
	if (conn >= TRANSPORT_MAX_CONNS || t->conns[conn].state != CONN_OPEN)
		return NULL;
	return &t->conns[conn];
}

int ucx_conn_find(const struct ucx_transport *t, ucp_ep_h ep)
{
	int i = ep ? map_position(t, ep) : -1;

	return i < 0 ? -1 : t->ep_map[i];
}

void ucx_conn_forget(struct ucx_transport *t, uint32_t conn)
{
	struct ucx_conn *c = &t->conns[conn];
	int i = map_position(t, c->ep);

	if (i >= 0)
		map_remove_at(t, (uint32_t)i);
	if (c->error_pending)
		t->n_error_pending--;
	c->gen++;
	c->inflight = 0;
	c->error = 0;
	c->error_pending = false;
	c->connected = false;
}

void ucx_conn_fail(struct ucx_transport *t, uint32_t conn, int error)
{
	struct ucx_conn *c = &t->conns[conn];

	if (c->state != CONN_OPEN || c->error)
		return;
	c->error = error < 0 ? error : -EIO;
	c->error_pending = true;
	t->n_error_pending++;
	ucx_wake(t);
}
