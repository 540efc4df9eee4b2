/* SPDX-License-Identifier: MIT */
/* fake_transport: see fake_transport.h. */
#include "fake_transport.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct fake_msg {
	struct fake_msg *next;
	uint32_t conn;   /* the receiver's connection */
	uint16_t id;
	size_t header_len, data_len;
	unsigned char *header, *data;
};

struct fake_conn {
	bool used, connected_pending, error_pending;
	int error;
	struct fake_transport *peer;
	uint32_t peer_conn;
};

struct fake_transport {
	struct transport base;
	struct fake_net *net;
	uint16_t port;                 /* 0: not listening */
	struct fake_conn conn[TRANSPORT_MAX_CONNS];
	struct fake_msg *queue, *tail; /* arrived, not delivered */
	uint32_t accepts_pending[TRANSPORT_MAX_CONNS];
	unsigned n_accepts_pending;
};

struct transport_rx {
	const struct fake_msg *m;
};

struct fake_net *fake_net_current;

static struct fake_transport *ft(struct transport *t)
{
	return (struct fake_transport *)t;
}

static int conn_alloc(struct fake_transport *t)
{
	for (uint32_t i = 0; i < TRANSPORT_MAX_CONNS; i++)
		if (!t->conn[i].used) {
			t->conn[i] = (struct fake_conn){ .used = true };
			return (int)i;
		}
	return -EMFILE;
}

static int fake_listen(struct transport *t, const char *addr, uint16_t port, uint16_t *ret_port)
{
	(void)addr;
	ft(t)->port = port ? port : 40000;
	if (ret_port)
		*ret_port = ft(t)->port;
	return 0;
}

static int fake_connect(struct transport *tt, const char *addr, uint16_t port, uint32_t *ret)
{
	struct fake_transport *t = ft(tt), *srv = NULL;
	int c = conn_alloc(t), s;

	(void)addr;
	if (c < 0)
		return c;
	*ret = (uint32_t)c;
	for (unsigned i = 0; i < t->net->n; i++)
		if (t->net->t[i] && t->net->t[i]->port == port)
			srv = t->net->t[i];
	if (!srv || atomic_load(&t->net->refuse_connect)) {
		t->conn[c].error_pending = true;
		t->conn[c].error = -ECONNREFUSED;
		return 0;
	}
	s = conn_alloc(srv);
	if (s < 0) {
		t->conn[c].error_pending = true;
		t->conn[c].error = s;
		return 0;
	}
	t->conn[c].peer = srv;
	t->conn[c].peer_conn = (uint32_t)s;
	t->conn[c].connected_pending = true;
	srv->conn[s].peer = t;
	srv->conn[s].peer_conn = (uint32_t)c;
	srv->accepts_pending[srv->n_accepts_pending++] = (uint32_t)s;
	return 0;
}

static unsigned char *dup_bytes(const void *p, size_t n)
{
	unsigned char *b = malloc(n ? n : 1);

	if (b && n)
		memcpy(b, p, n);
	return b;
}

static void enqueue(struct fake_transport *to, uint32_t conn, uint16_t id, const void *hdr,
		    size_t hl, const void *data, size_t dl)
{
	struct fake_msg *m = calloc(1, sizeof(*m));

	if (!m)
		return;
	*m = (struct fake_msg){ .conn = conn, .id = id, .header_len = hl, .data_len = dl,
				.header = dup_bytes(hdr, hl), .data = dup_bytes(data, dl) };
	if (to->tail)
		to->tail->next = m;
	else
		to->queue = m;
	to->tail = m;
}

static int fake_send(struct transport *tt, uint32_t conn, uint16_t id, const void *header,
		     size_t header_len, const void *data, size_t data_len, uint64_t cookie)
{
	struct fake_transport *t = ft(tt);
	struct fake_conn *c = conn < TRANSPORT_MAX_CONNS ? &t->conn[conn] : NULL;
	unsigned n = atomic_fetch_add(&t->net->sends, 1) + 1;
	unsigned fail_at = atomic_load(&t->net->fail_send_at);

	(void)cookie;
	if (!c || !c->used || !c->peer)
		return -ENOTCONN;
	if (fail_at && n == fail_at)
		return -EIO;
	if (header_len > TRANSPORT_MAX_HEADER)
		return -EMSGSIZE;
	enqueue(c->peer, c->peer_conn, id, header, header_len, data, data_len);
	if (atomic_load(&t->net->duplicate_id) == id) {
		atomic_store(&t->net->duplicate_id, 0);
		enqueue(c->peer, c->peer_conn, id, header, header_len, data, data_len);
	}
	return 0;
}

static int fake_recv(struct transport *t, struct transport_rx *rx, void *buf, size_t len,
		     uint64_t cookie)
{
	(void)t, (void)cookie;
	if (len != rx->m->data_len)
		return -EMSGSIZE;
	memcpy(buf, rx->m->data, len);
	return 0;
}

static void msg_free(struct fake_msg *m)
{
	free(m->header);
	free(m->data);
	free(m);
}

static void fake_close(struct transport *tt, uint32_t conn)
{
	struct fake_transport *t = ft(tt);
	struct fake_conn *c;

	if (conn >= TRANSPORT_MAX_CONNS || !t->conn[conn].used)
		return;
	c = &t->conn[conn];
	/* the other side sees the connection fail */
	if (c->peer && c->peer->conn[c->peer_conn].used &&
	    c->peer->conn[c->peer_conn].peer == t) {
		c->peer->conn[c->peer_conn].error_pending = true;
		c->peer->conn[c->peer_conn].error = -ECONNRESET;
		c->peer->conn[c->peer_conn].peer = NULL;
	}
	/* what had arrived on it goes away with it */
	for (struct fake_msg **pp = &t->queue; *pp;) {
		if ((*pp)->conn == conn) {
			struct fake_msg *m = *pp;

			*pp = m->next;
			msg_free(m);
		} else {
			pp = &(*pp)->next;
		}
	}
	t->tail = NULL;
	for (struct fake_msg *m = t->queue; m; m = m->next)
		t->tail = m;
	*c = (struct fake_conn){ 0 };
}

static int fake_progress(struct transport *tt)
{
	struct fake_transport *t = ft(tt);
	const struct transport_handlers *h = &t->base.h;
	unsigned hold = atomic_load(&t->net->hold_id);
	struct fake_msg **pp = &t->queue;
	int n = 0;

	for (unsigned i = 0; i < t->n_accepts_pending; i++) {
		h->on_accept(h->ctx, t->accepts_pending[i], "10.0.0.9");
		n++;
	}
	t->n_accepts_pending = 0;
	for (uint32_t i = 0; i < TRANSPORT_MAX_CONNS; i++) {
		struct fake_conn *c = &t->conn[i];

		if (c->used && c->connected_pending) {
			c->connected_pending = false;
			h->on_connected(h->ctx, i);
			n++;
		}
		if (c->used && c->error_pending) {
			c->error_pending = false;
			h->on_conn_error(h->ctx, i, c->error);
			n++;
		}
	}
	while (*pp) {
		struct fake_msg *m = *pp;
		struct transport_rx rx = { .m = m };
		struct transport_msg tm = { .id = m->id, .header = m->header,
					    .header_len = m->header_len, .data_len = m->data_len };

		if (hold && m->id == hold) {
			pp = &m->next;
			continue;
		}
		*pp = m->next;
		if (t->tail == m) {
			t->tail = NULL;
			for (struct fake_msg *x = t->queue; x; x = x->next)
				t->tail = x;
		}
		if (m->conn < TRANSPORT_MAX_CONNS && t->conn[m->conn].used) {
			if (m->id < 8)
				atomic_fetch_add(&t->net->delivered[m->id], 1);
			h->on_message(h->ctx, m->conn, &tm, &rx);
		}
		msg_free(m);
		n++;
		/* the handler may have closed connections: walk from the start again */
		pp = &t->queue;
		hold = atomic_load(&t->net->hold_id);
	}
	return n;
}

static int fake_arm(struct transport *t)
{
	(void)t;
	return 0;
}

static int fake_event_fd(const struct transport *t)
{
	(void)t;
	return -1;
}

static void fake_free(struct transport *tt)
{
	struct fake_transport *t = ft(tt);

	for (uint32_t i = 0; i < TRANSPORT_MAX_CONNS; i++)
		fake_close(tt, i);
	while (t->queue) {
		struct fake_msg *m = t->queue;

		t->queue = m->next;
		msg_free(m);
	}
	for (unsigned i = 0; i < t->net->n; i++)
		if (t->net->t[i] == t)
			t->net->t[i] = NULL;
	free(t);
}

void fake_transport_crash(struct transport *t)
{
	for (uint32_t i = 0; i < TRANSPORT_MAX_CONNS; i++)
		fake_close(t, i);
	ft(t)->port = 0;
}

static const struct transport_ops fake_ops = {
	.listen = fake_listen, .connect = fake_connect, .send = fake_send, .recv = fake_recv,
	.close = fake_close, .progress = fake_progress, .arm = fake_arm,
	.event_fd = fake_event_fd, .free = fake_free,
};

int fake_transport_new(const struct transport_handlers *h, struct transport **ret, char *why,
		       size_t why_len)
{
	struct fake_net *net = fake_net_current;
	struct fake_transport *t;

	(void)why, (void)why_len;
	if (!net || net->n == FAKE_MAX_TRANSPORTS)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->base.ops = &fake_ops;
	t->base.h = *h;
	t->net = net;
	net->t[net->n++] = t;
	*ret = &t->base;
	return 0;
}
