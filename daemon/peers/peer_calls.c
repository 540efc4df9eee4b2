/* SPDX-License-Identifier: MIT */
/*
 * peer_calls: the remote experts of runs. The runner's side (peers_batch:
 * dispatch and collect, the engine_remote of a run) and the reactor's (send,
 * match replies, deadlines).
 *
 * A call's life, under peers->mu:
 *
 *   QUEUED --reactor sends--> SENT --reply rows in--> DONE
 *      |                        |--error reply, peer down--> FAILED
 *      +--peer not up--> FAILED |--runner's deadline--> ABANDONED
 *
 * A call holds two references, the runner's and the reactor's. The runner
 * lets go in collect(); the reactor when the call is final and none of its
 * transfers is in flight (UCX may still read its rows or write its result).
 * The last one frees it, so neither side ever touches freed memory, however
 * late a reply comes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "peers/peers_internal.h"
#include "util/log.h"

struct peers_batch {
	struct peers *p;
	struct peer_call *calls; /* this engine call's, via batch_next */
	uint64_t t_dispatch_ns;
	uint64_t deadline_ns;
};

/* The rows buffers come from p->bufs (under p->mu): a call's megabytes stay mapped. */
static struct peer_call *call_new(struct peers *p, uint32_t peer, uint32_t total_rows,
				  uint32_t d_model)
{
	struct peer_call *c = calloc(1, sizeof(*c));
	size_t bytes = sizeof(float) * total_rows * d_model;

	if (!c)
		return NULL;
	pthread_mutex_lock(&p->mu);
	c->rows = buf_cache_get(&p->bufs, bytes);
	c->result = buf_cache_get(&p->bufs, bytes);
	if (!c->rows || !c->result) {
		buf_cache_put(&p->bufs, c->rows, bytes);
		buf_cache_put(&p->bufs, c->result, bytes);
		pthread_mutex_unlock(&p->mu);
		free(c);
		return NULL;
	}
	pthread_mutex_unlock(&p->mu);
	c->bytes = bytes;
	c->peer = peer;
	c->refs = 2;
	c->state = CALL_QUEUED;
	return c;
}

static void call_free(struct peers *p, struct peer_call *c)
{
	pthread_mutex_lock(&p->mu);
	buf_cache_put(&p->bufs, c->rows, c->bytes);
	buf_cache_put(&p->bufs, c->result, c->bytes);
	pthread_mutex_unlock(&p->mu);
	free(c);
}

void call_put(struct peers *p, struct peer_call *c)
{
	bool last;

	pthread_mutex_lock(&p->mu);
	last = --c->refs == 0;
	pthread_mutex_unlock(&p->mu);
	if (last)
		call_free(p, c);
}

/* ---- the runner's side ---- */

int peers_batch_new(struct peers *p, struct peers_batch **ret)
{
	struct peers_batch *b = calloc(1, sizeof(*b));

	if (!b)
		return -ENOMEM;
	b->p = p;
	*ret = b;
	return 0;
}

struct peers_batch *peers_batch_free(struct peers_batch *b)
{
	free(b);
	return NULL;
}

/* One call for experts [e0, e1) of peer @peer with rows (e1 bounded by the bins' count). */
static int call_build(struct peers *p, const struct engine_remote_job *job, uint32_t peer,
		      uint32_t *e_pos, struct peer_call **ret)
{
	struct peer_expert_req req = { .magic = PEER_PROTO_MAGIC, .layer = job->layer,
				       .activation = (uint32_t)job->activation,
				       .d_model = job->d_model };
	uint32_t e = *e_pos;
	struct peer_call *c;
	size_t row = 0;

	for (; e < job->n_experts && req.n_bins < PEER_REQ_MAX_BINS; e++) {
		uint32_t rows = job->bin_start[e + 1] - job->bin_start[e];

		if (job->host[e] != peer + 1 || !rows)
			continue;
		req.bin[req.n_bins++] = (struct peer_bin){ .expert = e, .rows = rows };
		req.total_rows += rows;
	}
	*e_pos = e;
	if (!req.n_bins) {
		*ret = NULL;
		return 0;
	}
	c = call_new(p, peer, req.total_rows, job->d_model);
	if (!c)
		return -ENOMEM;
	c->req = req;
	for (uint32_t i = 0; i < req.n_bins; i++) {
		size_t n = (size_t)req.bin[i].rows * job->d_model;

		memcpy(c->rows + row, job->xs + (size_t)job->bin_start[req.bin[i].expert] * job->d_model,
		       sizeof(float) * n);
		row += n;
	}
	*ret = c;
	return 0;
}

static void batch_drop_calls(struct peers_batch *b)
{
	while (b->calls) {
		struct peer_call *c = b->calls;

		b->calls = c->batch_next;
		/* never queued: both references are ours */
		call_free(b->p, c);
	}
}

static int batch_dispatch(void *ctx, const struct engine_remote_job *job)
{
	struct peers_batch *b = ctx;
	struct peers *p = b->p;
	struct peer_call *first = NULL, *last = NULL;
	uint64_t one = 1;
	int r;

	b->calls = NULL;
	for (uint32_t i = 0; i < p->n_peers; i++) {
		uint32_t e = 0;

		while (e < job->n_experts) {
			struct peer_call *c;

			r = call_build(p, job, i, &e, &c);
			if (r < 0) {
				batch_drop_calls(b);
				return r;
			}
			if (!c)
				break;
			c->batch_next = b->calls;
			b->calls = c;
		}
	}
	if (!b->calls)
		return 0;
	b->t_dispatch_ns = peers_now_ns();
	b->deadline_ns = b->t_dispatch_ns + (uint64_t)p->cfg->peer_deadline_ms * 1000000ull;
	for (struct peer_call *c = b->calls; c; c = c->batch_next) {
		c->next = first;
		first = c;
		if (!last)
			last = c;
	}
	pthread_mutex_lock(&p->mu);
	last->next = p->inbox;
	p->inbox = first;
	pthread_mutex_unlock(&p->mu);
	/* an eventfd write of 1 cannot fail short of a full counter, which 2^64 wakes do not reach */
	if (write(p->inbox_fd, &one, sizeof(one)) < 0)
		log_error("peers: cannot wake the reactor: %m");
	return 0;
}

static bool batch_all_final(const struct peers_batch *b)
{
	for (const struct peer_call *c = b->calls; c; c = c->batch_next)
		if (c->state == CALL_QUEUED || c->state == CALL_SENT)
			return false;
	return true;
}

static int batch_collect(void *ctx, const struct engine_remote_job *job, uint8_t *failed)
{
	struct peers_batch *b = ctx;
	struct peers *p = b->p;
	struct timespec until = { .tv_sec = (time_t)(b->deadline_ns / 1000000000ull),
				  .tv_nsec = (long)(b->deadline_ns % 1000000000ull) };
	uint64_t t_wait = peers_now_ns(), t_last = t_wait;
	bool any_failed = false;

	pthread_mutex_lock(&p->mu);
	while (!batch_all_final(b))
		if (pthread_cond_timedwait(&p->done, &p->mu, &until) == ETIMEDOUT)
			break;
	for (struct peer_call *c = b->calls; c; c = c->batch_next) {
		if (c->state == CALL_QUEUED || c->state == CALL_SENT) {
			c->state = CALL_ABANDONED;
			c->t_final_ns = peers_now_ns();
		}
		if (c->t_final_ns > t_last)
			t_last = c->t_final_ns;
	}
	/* the overlap: how long the remote part took, and how much of it we waited for */
	p->remote_batches++;
	p->remote_span_ns += t_last - b->t_dispatch_ns;
	p->waited_ns += t_last > t_wait ? t_last - t_wait : 0;
	pthread_mutex_unlock(&p->mu);

	while (b->calls) {
		struct peer_call *c = b->calls;
		size_t row = 0;

		b->calls = c->batch_next;
		/* final now: the reactor no longer writes the state or the result */
		for (uint32_t i = 0; i < c->req.n_bins; i++) {
			const struct peer_bin *bin = &c->req.bin[i];
			size_t n = (size_t)bin->rows * job->d_model;

			if (c->state == CALL_DONE)
				memcpy(job->ys + (size_t)job->bin_start[bin->expert] * job->d_model,
				       c->result + row, sizeof(float) * n);
			else
				failed[bin->expert] = 1;
			row += n;
		}
		any_failed |= c->state != CALL_DONE;
		call_put(p, c);
	}
	if (any_failed && p->cfg->peer_failure == PEER_FAILURE_ERROR)
		return -EHOSTUNREACH;
	return 0;
}

bool peers_batch_remote(struct peers_batch *b, uint32_t layer, struct engine_remote *ret)
{
	const uint16_t *host = peers_layer_hosts(b->p, layer);

	if (!host)
		return false;
	*ret = (struct engine_remote){ .host = host, .ctx = b, .dispatch = batch_dispatch,
				       .collect = batch_collect };
	return true;
}

/* ---- the reactor's side ---- */

/*
 * Under p->mu: a call reaches a final state and the runners wake. False
 * when it was final already (its runner gave up, or it failed before).
 */
static bool call_finish_locked(struct peers *p, struct peer_call *c, enum call_state state,
			       int status)
{
	if (c->state != CALL_QUEUED && c->state != CALL_SENT)
		return false;
	c->state = state;
	c->status = status;
	c->t_final_ns = peers_now_ns();
	pthread_cond_broadcast(&p->done);
	return true;
}

static bool call_finish(struct peers *p, struct peer_call *c, enum call_state state, int status)
{
	bool changed;

	pthread_mutex_lock(&p->mu);
	changed = call_finish_locked(p, c, state, status);
	pthread_mutex_unlock(&p->mu);
	return changed;
}

static void call_send(struct peers *p, struct peer_call *c, uint64_t now)
{
	struct peer *peer = &p->peer[c->peer];
	size_t bytes = sizeof(float) * c->req.total_rows * c->req.d_model;
	int r;

	c->id = ++p->next_call_id;
	c->req.call = c->id;
	c->conn = peer->conn;
	c->t_sent_ns = now;
	c->next = p->pending;
	p->pending = c;
	peer->n.calls++;
	pthread_mutex_lock(&p->mu);
	if (c->state == CALL_QUEUED)
		c->state = CALL_SENT;
	pthread_mutex_unlock(&p->mu);
	r = transport_send(p->t, c->conn, PEER_MSG_EXPERT_REQ, &c->req,
			   peer_expert_req_size(c->req.n_bins), c->rows, bytes,
			   cookie_make(COOKIE_CALL_SEND, c->id));
	if (r < 0) {
		call_finish(p, c, CALL_FAILED, r);
		peers_peer_failed(p, c->peer, r, "a send failed", now);
		return;
	}
	c->send_busy = r == 1;
	peer->n.rows_out += c->req.total_rows;
	peer->n.bytes_out += bytes;
}

int calls_take_inbox(struct peers *p, uint64_t now, bool fd_ready)
{
	struct peer_call *list, *rev = NULL;
	enum call_state s;
	int n = 0;
	uint64_t v;

	/*
	 * Drain the eventfd first, then the list: a call queued in between
	 * wakes us again. Only when its poll fired: while the reactor is busy
	 * the list is taken without a syscall, and the counter left behind
	 * costs one early wake-up before the next sleep.
	 */
	if (fd_ready && read(p->inbox_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_error("peers: inbox eventfd: %m");
	pthread_mutex_lock(&p->mu);
	list = p->inbox;
	p->inbox = NULL;
	pthread_mutex_unlock(&p->mu);
	/* oldest first */
	while (list) {
		struct peer_call *c = list;

		list = c->next;
		c->next = rev;
		rev = c;
	}
	while (rev) {
		struct peer_call *c = rev;

		rev = c->next;
		n++;
		pthread_mutex_lock(&p->mu);
		s = c->state;
		pthread_mutex_unlock(&p->mu);
		if (s == CALL_ABANDONED) {
			/* its runner gave up before we sent it: our delay, not the peer's */
			call_put(p, c);
			continue;
		}
		if (p->peer[c->peer].state != PEER_UP) {
			p->peer[c->peer].n.calls_failed++;
			call_finish(p, c, CALL_FAILED, -EHOSTUNREACH);
			call_put(p, c);
			continue;
		}
		call_send(p, c, now);
	}
	return n;
}

static struct peer_call *pending_find(struct peers *p, uint64_t id)
{
	for (struct peer_call *c = p->pending; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

/*
 * A call its runner gave up on is the peer's deadline miss, counted once
 * whichever way the reactor learns of it (the sweep, a late reply, a late
 * transfer), and the peer goes down: the next calls fail at once instead
 * of each waiting a deadline. Returns the peers to mark down, as a bit set.
 */
static uint64_t call_count_miss(struct peers *p, struct peer_call *c)
{
	if (c->missed)
		return 0;
	c->missed = true;
	p->peer[c->peer].n.deadline_misses++;
	return p->peer[c->peer].state == PEER_UP && p->peer[c->peer].conn == c->conn
		       ? 1ull << c->peer
		       : 0;
}

static void peers_down_for_misses(struct peers *p, uint64_t set, uint64_t now)
{
	for (uint32_t i = 0; i < p->n_peers; i++)
		if (set & (1ull << i))
			peers_peer_failed(p, i, -ETIMEDOUT, "missed its deadline", now);
}

/* Unlink and release the calls that are final and have nothing in flight. */
static void pending_release(struct peers *p)
{
	struct peer_call **pp = &p->pending;
	uint64_t down = 0;

	while (*pp) {
		struct peer_call *c = *pp;
		enum call_state s;

		pthread_mutex_lock(&p->mu);
		s = c->state;
		pthread_mutex_unlock(&p->mu);
		if (s == CALL_ABANDONED)
			down |= call_count_miss(p, c);
		if (s == CALL_SENT || c->send_busy || c->recv_busy) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		call_put(p, c);
	}
	/* after the walk: marking a peer down releases calls too (calls_fail_peer) */
	peers_down_for_misses(p, down, p->now_ns);
}

static void rtt_note(struct peer *peer, uint64_t sent, uint64_t now)
{
	double us = (double)(now - sent) / 1000.0;

	peer->n.rtt_last_us = us;
	peer->n.rtt_avg_us = peer->n.rtt_avg_us ? 0.875 * peer->n.rtt_avg_us + 0.125 * us : us;
	if (us > peer->n.rtt_max_us)
		peer->n.rtt_max_us = us;
}

/* A call's result rows are in: DONE, unless its runner gave up meanwhile. */
static void call_done(struct peers *p, struct peer_call *c, uint64_t now)
{
	struct peer *peer = &p->peer[c->peer];

	if (!call_finish(p, c, CALL_DONE, 0))
		return;
	rtt_note(peer, c->t_sent_ns, now);
	peer->n.rows_in += c->req.total_rows;
	peer->n.bytes_in += sizeof(float) * c->req.total_rows * c->req.d_model;
}

void calls_on_reply(struct peers *p, uint32_t i, const struct transport_msg *m,
		    struct transport_rx *rx, uint64_t now)
{
	struct peer *peer = &p->peer[i];
	struct peer_expert_reply rep;
	struct diag d = { { 0 } };
	struct peer_call *c;
	enum call_state s;
	int r;

	if (peer_expert_reply_decode(m->header, m->header_len, m->data_len, &rep, &d) < 0) {
		peer->n.errors++;
		log_error("peer %s: %s; the connection is closed", peer->cfg.name, d.msg);
		peers_peer_failed(p, i, -EPROTO, "sent a malformed reply", now);
		return;
	}
	c = pending_find(p, rep.call);
	if (!c || c->peer != i || c->recv_busy) {
		/* a duplicate, or a call already given up and released */
		peer->n.late_replies++;
		return;
	}
	pthread_mutex_lock(&p->mu);
	s = c->state;
	pthread_mutex_unlock(&p->mu);
	if (s != CALL_SENT) {
		peer->n.late_replies++;
		pending_release(p);
		return;
	}
	if (rep.status < 0) {
		peer->n.errors++;
		peer->n.calls_failed++;
		log_error("peer %s could not compute layer %u's experts: %s (%d)", peer->cfg.name,
			  c->req.layer, rep.why, rep.status);
		call_finish(p, c, CALL_FAILED, rep.status);
		pending_release(p);
		return;
	}
	if (rep.total_rows != c->req.total_rows || rep.d_model != c->req.d_model) {
		peer->n.errors++;
		call_finish(p, c, CALL_FAILED, -EPROTO);
		peers_peer_failed(p, i, -EPROTO, "answered with the wrong number of rows", now);
		return;
	}
	r = transport_recv(p->t, rx, c->result, m->data_len, cookie_make(COOKIE_CALL_RECV, c->id));
	if (r < 0) {
		call_finish(p, c, CALL_FAILED, r);
		peers_peer_failed(p, i, r, "a receive failed", now);
		return;
	}
	if (r == 1) {
		c->recv_busy = true;
		return;
	}
	call_done(p, c, now);
	pending_release(p);
}

void calls_on_transfer_done(struct peers *p, uint64_t cookie, int status, uint64_t now)
{
	struct peer_call *c = pending_find(p, cookie_value(cookie));

	if (!c)
		return;
	if (cookie_kind(cookie) == COOKIE_CALL_SEND) {
		c->send_busy = false;
	} else {
		c->recv_busy = false;
		if (status == 0)
			call_done(p, c, now);
	}
	/*
	 * Only the failure of a call still waiting is news of its peer's
	 * connection. One already final failed with its peer (calls_fail_peer)
	 * or was given up (the miss downs the peer); its transfer may fail long
	 * after (a closed connection's sends complete with -ECANCELED when the
	 * transport gets to them), when the peer is up again on a connection
	 * that can carry the old one's number, which must not go down for it.
	 */
	if (status < 0 && call_finish(p, c, CALL_FAILED, status) &&
	    p->peer[c->peer].state == PEER_UP && p->peer[c->peer].conn == c->conn)
		peers_peer_failed(p, c->peer, status, "a transfer failed", now);
	pending_release(p);
}

void calls_fail_peer(struct peers *p, uint32_t i, int err)
{
	for (struct peer_call *c = p->pending; c; c = c->next)
		if (c->peer == i) {
			pthread_mutex_lock(&p->mu);
			if (c->state == CALL_SENT)
				p->peer[i].n.calls_failed++;
			call_finish_locked(p, c, CALL_FAILED, err);
			pthread_mutex_unlock(&p->mu);
		}
	pending_release(p);
}

void calls_sweep(struct peers *p, uint64_t now)
{
	/* a grace of one deadline: the runner gives up first and says so by ABANDONED */
	const uint64_t deadline = (uint64_t)p->cfg->peer_deadline_ms * 1000000ull;

	uint64_t down = 0;

	for (struct peer_call *c = p->pending; c; c = c->next) {
		bool lost;

		pthread_mutex_lock(&p->mu);
		/* a safety net: its runner gives up at one deadline and marks it ABANDONED */
		lost = c->state == CALL_SENT && now - c->t_sent_ns > 2 * deadline;
		if (lost)
			call_finish_locked(p, c, CALL_FAILED, -ETIMEDOUT);
		pthread_mutex_unlock(&p->mu);
		if (lost)
			down |= call_count_miss(p, c);
	}
	peers_down_for_misses(p, down, now);
	pending_release(p);
}
