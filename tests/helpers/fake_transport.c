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

/* A deferred send's connection once the sender closed it: the number may name another. */
#define NO_CONN UINT32_MAX

/* A send that returned 1, until its on_send_done (or transport_free). */
struct fake_send {
	struct fake_send *next;
	uint32_t conn;              /* the sender's connection, or NO_CONN */
	uint64_t cookie;
	const unsigned char *data;  /* the daemon's buffer, read again at completion */
	size_t data_len;
	uint64_t sum;               /* of its bytes when it was sent */
	int status;                 /* 0 until the connection closes or fails */
};

struct fake_conn {
	bool used, connected_pending, error_pending;
	int error;
	struct fake_transport *peer; /* NULL once it failed */
	uint32_t peer_conn;
};

struct fake_transport {
	struct transport base;
	struct fake_net *net;
	struct fake_send_stats *stats; /* net->send[] of this transport */
	uint16_t port;                 /* 0: not listening */
	bool in_progress;              /* a handler's transport_progress() does nothing */
	struct fake_conn conn[TRANSPORT_MAX_CONNS];
	struct fake_msg *queue, *tail; /* arrived, not delivered */
	struct fake_send *sends, **sends_tail; /* deferred, oldest first */
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

/* FNV-1a: enough to tell whether a buffer still holds what was sent. */
static uint64_t bytes_sum(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static bool send_deferred(const struct fake_net *net, uint16_t id)
{
	unsigned only = atomic_load(&net->defer_send_id);

	return atomic_load(&net->defer_send_done) && (!only || only == id);
}

/* Record @cookie's completion for later; false when out of memory (it completes at once). */
static bool send_defer(struct fake_transport *t, uint32_t conn, const void *data,
		       size_t data_len, uint64_t cookie)
{
	struct fake_send *s = calloc(1, sizeof(*s));

	if (!s)
		return false;
	*s = (struct fake_send){ .conn = conn, .cookie = cookie, .data = data,
				 .data_len = data_len, .sum = bytes_sum(data, data_len) };
	*t->sends_tail = s;
	t->sends_tail = &s->next;
	atomic_fetch_add(&t->stats->deferred, 1);
	return true;
}

/* Read the data again: a freed buffer is ASan's, a reused one the counter's. */
static void send_check_buf(struct fake_transport *t, const struct fake_send *s)
{
	if (bytes_sum(s->data, s->data_len) != s->sum)
		atomic_fetch_add(&t->stats->buf_changed, 1);
}

/* The deferred sends on @conn that had not failed yet fail with @status (the first error wins). */
static void sends_fail(struct fake_transport *t, uint32_t conn, int status)
{
	for (struct fake_send *s = t->sends; s; s = s->next)
		if (s->conn == conn && s->status == 0)
			s->status = status;
}

/* The sender closed @conn: its sends fail (-ECANCELED unless they failed already) and leave it. */
static void sends_detach(struct fake_transport *t, uint32_t conn)
{
	sends_fail(t, conn, -ECANCELED);
	for (struct fake_send *s = t->sends; s; s = s->next)
		if (s->conn == conn)
			s->conn = NO_CONN;
}

static bool sends_on(const struct fake_transport *t, uint32_t conn)
{
	for (const struct fake_send *s = t->sends; s; s = s->next)
		if (s->conn == conn)
			return true;
	return false;
}

static struct fake_send *sends_take_first(struct fake_transport *t)
{
	struct fake_send *s = t->sends;

	if (!s)
		return NULL;
	t->sends = s->next;
	if (!t->sends)
		t->sends_tail = &t->sends;
	return s;
}

static void send_count(struct fake_transport *t, int status)
{
	if (status == 0)
		atomic_fetch_add(&t->stats->done_ok, 1);
	else if (status == -ECANCELED)
		atomic_fetch_add(&t->stats->done_canceled, 1);
	else
		atomic_fetch_add(&t->stats->done_reset, 1);
}

/* Complete the deferred sends, oldest first, unless held; the number completed. */
static int sends_complete(struct fake_transport *t)
{
	const struct transport_handlers *h = &t->base.h;
	struct fake_send *s;
	int n = 0;

	/* unlinked before the handler runs: it may send (appending) or close (failing) */
	while (!atomic_load(&t->net->hold_send_done) && (s = sends_take_first(t))) {
		send_check_buf(t, s);
		send_count(t, s->status);
		h->on_send_done(h->ctx, s->cookie, s->status);
		free(s);
		n++;
	}
	return n;
}

/* transport_free(): what is in flight goes without a callback (the buffers are read once more). */
static void sends_drop_all(struct fake_transport *t)
{
	struct fake_send *s;

	while ((s = sends_take_first(t))) {
		send_check_buf(t, s);
		atomic_fetch_add(&t->stats->dropped, 1);
		free(s);
	}
}

static int fake_send(struct transport *tt, uint32_t conn, uint16_t id, const void *header,
		     size_t header_len, const void *data, size_t data_len, uint64_t cookie)
{
	struct fake_transport *t = ft(tt);
	struct fake_conn *c = conn < TRANSPORT_MAX_CONNS ? &t->conn[conn] : NULL;
	unsigned n = atomic_fetch_add(&t->net->sends, 1) + 1;
	unsigned fail_at = atomic_load(&t->net->fail_send_at);

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
	/* the header is copied, as UCX's transport copies it: only the data stays in use */
	if (send_deferred(t->net, id) && send_defer(t, conn, data, data_len, cookie))
		return 1;
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

/* What had arrived on @conn and was not delivered goes away. */
static void queue_drop(struct fake_transport *t, uint32_t conn)
{
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
}

/* @conn of @t fails with @error: its sends first, on_conn_error after them (fake_progress). */
static void conn_fail(struct fake_transport *t, uint32_t conn, int error)
{
	struct fake_conn *c = &t->conn[conn];

	c->error_pending = true;
	c->error = error;
	c->peer = NULL;
	sends_fail(t, conn, error);
}

/* The connection at the other end of @t's @conn, if it still is one. */
static bool peer_end_open(struct fake_transport *t, uint32_t conn)
{
	const struct fake_conn *c = &t->conn[conn];

	return c->peer && c->peer->conn[c->peer_conn].used &&
	       c->peer->conn[c->peer_conn].peer == t;
}

static void fake_close(struct transport *tt, uint32_t conn)
{
	struct fake_transport *t = ft(tt);
	struct fake_conn *c;

	if (conn >= TRANSPORT_MAX_CONNS || !t->conn[conn].used)
		return;
	c = &t->conn[conn];
	/* the other side sees the connection fail */
	if (peer_end_open(t, conn))
		conn_fail(c->peer, c->peer_conn, -ECONNRESET);
	sends_detach(t, conn);
	queue_drop(t, conn);
	*c = (struct fake_conn){ 0 };
}

/* Announce failed connections whose sends all completed (the contract's order). */
static int conns_fail_announce(struct fake_transport *t)
{
	const struct transport_handlers *h = &t->base.h;
	int n = 0;

	for (uint32_t i = 0; i < TRANSPORT_MAX_CONNS; i++) {
		struct fake_conn *c = &t->conn[i];

		if (c->used && c->error_pending && !sends_on(t, i)) {
			c->error_pending = false;
			h->on_conn_error(h->ctx, i, c->error);
			n++;
		}
	}
	return n;
}

static int fake_progress(struct transport *tt)
{
	struct fake_transport *t = ft(tt);
	const struct transport_handlers *h = &t->base.h;
	unsigned hold = atomic_load(&t->net->hold_id);
	struct fake_msg **pp = &t->queue;
	int n = 0;

	if (t->in_progress)
		return 0; /* called from a handler (transport.h) */
	t->in_progress = true;
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
	/* after the messages, as transport_ucx.c drains completions after UCX's progress */
	n += sends_complete(t);
	n += conns_fail_announce(t);
	t->in_progress = false;
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
	sends_drop_all(t);
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

void fake_transport_crash(struct transport *tt)
{
	struct fake_transport *t = ft(tt);

	for (uint32_t i = 0; i < TRANSPORT_MAX_CONNS; i++) {
		struct fake_conn *c = &t->conn[i];

		if (!c->used || !c->peer)
			continue; /* free, or failed already */
		if (peer_end_open(t, i))
			conn_fail(c->peer, c->peer_conn, -ECONNRESET);
		conn_fail(t, i, -ECONNRESET);
		queue_drop(t, i);
	}
	t->port = 0;
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
	t->stats = &net->send[net->n];
	t->sends_tail = &t->sends;
	net->t[net->n++] = t;
	*ret = &t->base;
	return 0;
}
