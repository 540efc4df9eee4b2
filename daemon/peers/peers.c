/* SPDX-License-Identifier: MIT */
/*
 * peers: the connections to the other daemons, their HELLO, their states
 * and reconnects; the transport's callbacks sorted out to the calls
 * (peer_calls.c) and to the served requests (peer_serve.c). See peers.h.
 *
 * A peer's state:
 *
 *   DOWN --tick: connect, send HELLO--> CONNECTING --HELLO reply ok--> UP
 *     ^                                   |  refused --> REFUSED (retried slowly)
 *     +---- connection error, deadline miss, no HELLO reply in time ----+
 *
 * Retries back off from 100 ms to 2 s (REFUSED: 5 s, since it takes a
 * configuration change or a restart on the other side).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "peers/peer_identity.h"
#include "peers/peers_internal.h"
#include "util/log.h"

#define BACKOFF_MIN_NS 100000000ull   /* 100 ms */
#define BACKOFF_MAX_NS 2000000000ull  /* 2 s */
#define REFUSED_RETRY_NS 5000000000ull
#define HELLO_MIN_WAIT_NS 1000000000ull

const char *peer_state_name(enum peer_state s)
{
	switch (s) {
	case PEER_DOWN:
		return "down";
	case PEER_CONNECTING:
		return "connecting";
	case PEER_UP:
		return "up";
	case PEER_REFUSED:
		return "refused";
	}
	return "?";
}

void peers_close_later(struct peers *p, uint32_t conn)
{
	for (uint32_t i = 0; i < p->n_to_close; i++)
		if (p->to_close[i] == conn)
			return;
	if (p->n_to_close < TRANSPORT_MAX_CONNS)
		p->to_close[p->n_to_close++] = conn;
}

static void close_deferred(struct peers *p)
{
	for (uint32_t i = 0; i < p->n_to_close; i++)
		transport_close(p->t, p->to_close[i]);
	p->n_to_close = 0;
}

static void peer_set_state(struct peer *peer, enum peer_state s, uint64_t now)
{
	peer->state = s;
	peer->state_since_ns = now;
}

void peers_peer_failed(struct peers *p, uint32_t i, int err, const char *why, uint64_t now)
{
	struct peer *peer = &p->peer[i];

	if (peer->state != PEER_UP && peer->state != PEER_CONNECTING)
		return;
	if (peer->state == PEER_UP)
		log_error("peer %s (%s:%u) is down: %s (%s); its experts' tokens get "
			  "peer_failure = %s until it is back",
			  peer->cfg.name, peer->cfg.at.addr, peer->cfg.at.port, why, strerror(-err),
			  p->cfg->peer_failure == PEER_FAILURE_DROP ? "drop" : "error");
	snprintf(peer->why, sizeof(peer->why), "%s (%s)", why, strerror(-err));
	peer->n.disconnects++;
	peers_close_later(p, peer->conn);
	peer_set_state(peer, PEER_DOWN, now);
	peer->next_try_ns = now + peer->backoff_ns;
	peer->backoff_ns = peer->backoff_ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS
								: peer->backoff_ns * 2;
	calls_fail_peer(p, i, -EHOSTUNREACH);
}

static void peer_connect(struct peers *p, uint32_t i, uint64_t now)
{
	struct peer *peer = &p->peer[i];
	struct peer_hello h = { .magic = PEER_PROTO_MAGIC, .version = PEER_PROTO_VERSION,
				.model = p->model_id, .max_experts = p->max_experts };
	size_t asks = (size_t)moe_model_n_layers(p->model) * p->max_experts;
	int r;

	snprintf(h.name, sizeof(h.name), "%s", p->name);
	r = transport_connect(p->t, peer->cfg.at.addr, peer->cfg.at.port, &peer->conn);
	if (r < 0) {
		snprintf(peer->why, sizeof(peer->why), "cannot connect (%s)", strerror(-r));
		peer->next_try_ns = now + BACKOFF_MAX_NS;
		return;
	}
	peer->n.connects++;
	peer_set_state(peer, PEER_CONNECTING, now);
	/* the asks stay in peer->asks: the send may finish later */
	r = transport_send(p->t, peer->conn, PEER_MSG_HELLO, &h, sizeof(h), peer->asks, asks,
			   cookie_make(COOKIE_NONE, 0));
	if (r < 0)
		peers_peer_failed(p, i, r, "cannot send HELLO", now);
}

static int peer_by_conn(const struct peers *p, uint32_t conn)
{
	for (uint32_t i = 0; i < p->n_peers; i++)
		if ((p->peer[i].state == PEER_CONNECTING || p->peer[i].state == PEER_UP) &&
		    p->peer[i].conn == conn)
			return (int)i;
	return -1;
}

static void on_hello_reply(struct peers *p, uint32_t i, const struct transport_msg *m)
{
	struct peer *peer = &p->peer[i];
	struct peer_hello_reply rep;
	struct diag d = { { 0 } };
	uint64_t now = p->now_ns;

	if (peer->state != PEER_CONNECTING)
		return;
	if (peer_hello_reply_decode(m->header, m->header_len, &rep, &d) < 0) {
		log_error("peer %s: %s", peer->cfg.name, d.msg);
		peers_peer_failed(p, i, -EPROTO, "answered HELLO with something else", now);
		return;
	}
	snprintf(peer->remote_name, sizeof(peer->remote_name), "%s", rep.name);
	if (rep.status == 0 && memcmp(&rep.model, &p->model_id, sizeof(rep.model)) != 0) {
		rep.status = -ESTALE;
		snprintf(rep.why, sizeof(rep.why), "it serves another model");
	}
	if (rep.status < 0) {
		log_error("peer %s (%s:%u) refused this host: %s; retrying every %llu s",
			  peer->cfg.name, peer->cfg.at.addr, peer->cfg.at.port, rep.why,
			  REFUSED_RETRY_NS / 1000000000ull);
		snprintf(peer->why, sizeof(peer->why), "refused: %.200s", rep.why);
		peers_close_later(p, peer->conn);
		peer_set_state(peer, PEER_REFUSED, now);
		peer->next_try_ns = now + REFUSED_RETRY_NS;
		return;
	}
	log_info("peer %s (%s:%u, '%s') is up", peer->cfg.name, peer->cfg.at.addr,
		 peer->cfg.at.port, rep.name);
	peer->why[0] = '\0';
	peer->backoff_ns = BACKOFF_MIN_NS;
	peer_set_state(peer, PEER_UP, now);
}

/* ---- the transport's callbacks ---- */

static void on_connected(void *ctx, uint32_t conn)
{
	(void)ctx, (void)conn; /* HELLO went out with the connect; its reply says more */
}

static void on_accept(void *ctx, uint32_t conn, const char *addr)
{
	serve_on_accept(ctx, conn, addr);
}

static void on_conn_error(void *ctx, uint32_t conn, int status)
{
	struct peers *p = ctx;
	int i = peer_by_conn(p, conn), slot;

	if (i >= 0) {
		peers_peer_failed(p, (uint32_t)i, status, "the connection failed", p->now_ns);
		return;
	}
	slot = serve_find(p, conn);
	if (slot >= 0)
		serve_on_conn_error(p, (uint32_t)slot);
}

static void on_message(void *ctx, uint32_t conn, const struct transport_msg *m,
		       struct transport_rx *rx)
{
	struct peers *p = ctx;
	int i = peer_by_conn(p, conn), slot;

	if (i >= 0) {
		if (m->id == PEER_MSG_HELLO_REPLY)
			on_hello_reply(p, (uint32_t)i, m);
		else if (m->id == PEER_MSG_EXPERT_REPLY && p->peer[i].state == PEER_UP)
			calls_on_reply(p, (uint32_t)i, m, rx, p->now_ns);
		else
			p->peer[i].n.errors++;
		return;
	}
	slot = serve_find(p, conn);
	if (slot >= 0)
		serve_on_message(p, (uint32_t)slot, m, rx);
}

static void on_transfer_done(void *ctx, uint64_t cookie, int status)
{
	struct peers *p = ctx;

	switch (cookie_kind(cookie)) {
	case COOKIE_CALL_SEND:
	case COOKIE_CALL_RECV:
		calls_on_transfer_done(p, cookie, status, p->now_ns);
		break;
	case COOKIE_SERVE_RECV:
	case COOKIE_SERVE_SEND:
	case COOKIE_HELLO:
		serve_on_transfer_done(p, cookie, status);
		break;
	case COOKIE_NONE:
		break;
	}
}

/* ---- set-up ---- */

/* UCX without rendezvous: see transport_ucx_opts.eager_only for the UCX 1.13 abort it avoids */
static int transport_ucx_eager(const struct transport_handlers *h, struct transport **ret,
			       char *why, size_t why_len)
{
	const struct transport_ucx_opts o = { .eager_only = true };

	return transport_ucx_new_opts(&o, h, ret, why, why_len);
}

static int peers_tables(struct peers *p, struct diag *d)
{
	const struct moe_model *m = p->model;
	struct peer_list list;
	int r;

	r = peer_list_parse(p->cfg->peers, &list, d);
	if (r < 0)
		return r;
	p->n_peers = list.n;
	for (uint32_t i = 0; i < list.n; i++)
		p->peer[i] = (struct peer){ .cfg = list.peer[i], .backoff_ns = BACKOFF_MIN_NS };
	p->n_experts = calloc(moe_model_n_layers(m), sizeof(*p->n_experts));
	p->host = calloc(moe_model_n_layers(m), sizeof(*p->host));
	p->layer_remote = calloc(moe_model_n_layers(m), sizeof(*p->layer_remote));
	p->host_limited = calloc(moe_model_n_layers(m), sizeof(*p->host_limited));
	p->has_host_limit = calloc(moe_model_n_layers(m), sizeof(*p->has_host_limit));
	if (!p->n_experts || !p->host || !p->layer_remote || !p->host_limited ||
	    !p->has_host_limit)
		return diag_set(d, -ENOMEM, "peers: out of memory");
	for (uint32_t l = 0; l < moe_model_n_layers(m); l++) {
		p->n_experts[l] = moe_model_layer(m, l)->n_experts;
		if (p->n_experts[l] > p->max_experts)
			p->max_experts = p->n_experts[l];
		p->host[l] = calloc(p->n_experts[l] + 1, sizeof(uint16_t));
		if (!p->host[l])
			return diag_set(d, -ENOMEM, "peers: out of memory");
	}
	r = expert_hosts_parse(p->cfg->expert_hosts, &list, moe_model_n_layers(m), p->n_experts, p->host, d);
	if (r < 0)
		return r;
	for (uint32_t l = 0; l < moe_model_n_layers(m); l++) {
		const struct moe_layer *L = moe_model_layer(m, l);

		for (uint32_t e = 0; e < p->n_experts[l]; e++)
			p->layer_remote[l] |= p->host[l][e] != 0;
		if (p->layer_remote[l] && L->router.kind == ROUTER_BASE) {
			log_info("layer %u routes with BASE, whose experts compute here: its "
				 "expert_hosts entries do not apply", l);
			p->layer_remote[l] = false;
			memset(p->host[l], 0, sizeof(uint16_t) * p->n_experts[l]);
		}
	}
	for (uint32_t i = 0; i < p->n_peers; i++) {
		p->peer[i].asks = calloc((size_t)moe_model_n_layers(m) * p->max_experts + 1, 1);
		if (!p->peer[i].asks)
			return diag_set(d, -ENOMEM, "peers: out of memory");
		for (uint32_t l = 0; l < moe_model_n_layers(m); l++)
			for (uint32_t e = 0; e < p->n_experts[l]; e++)
				p->peer[i].asks[(size_t)l * p->max_experts + e] =
					p->host[l][e] == i + 1;
	}
	return 0;
}

/*
 * max_hosts_per_token on top-k layers: DeepSeek-V3's node-limited routing
 * (a token keeps the best M nodes, each scored by the sum of its two best
 * experts' affinities, and chooses its k experts among theirs) is the
 * router's group limit with the hosts as the groups. So each host's experts
 * of the layer must be one contiguous block, all blocks of one size; a
 * layer that limits groups already keeps its own groups (its model chose
 * them), and M >= the hosts of the layer needs no limit.
 */
static int host_limit_setup(struct peers *p, struct diag *d)
{
	const uint32_t M = p->cfg->max_hosts_per_token;

	if (!M)
		return 0;
	for (uint32_t l = 0; l < moe_model_n_layers(p->model); l++) {
		const struct moe_layer *L = moe_model_layer(p->model, l);
		const uint16_t *h = p->host[l];
		uint32_t E = L->n_experts, block = 0, blocks = 0, run = 0;
		uint8_t seen[PEERS_MAX + 1] = { 0 };
		struct router_config *rc = &p->host_limited[l];

		if (L->router.kind != ROUTER_TOPK || !p->layer_remote[l])
			continue;
		if (L->router.expert_groups)
			return diag_set(d, -EINVAL,
					"max_hosts_per_token: layer %u already limits its tokens to "
					"%u of %u expert groups; give each host whole groups instead",
					l, L->router.topk_groups, L->router.expert_groups);
		for (uint32_t e = 0; e < E; e++) {
			run++;
			if (e + 1 < E && h[e + 1] == h[e])
				continue;
			if (seen[h[e]] || (block && run != block))
				return diag_set(d, -EINVAL,
						"max_hosts_per_token: layer %u's experts are not one "
						"block of equal size per host (expert_hosts); the "
						"limit needs each host's experts contiguous",
						l);
			seen[h[e]] = 1;
			block = run;
			run = 0;
			blocks++;
		}
		if (M >= blocks)
			continue;
		*rc = L->router;
		rc->expert_groups = blocks;
		rc->topk_groups = M;
		rc->group_score = GROUP_SCORE_TOP2;
		if (router_config_validate(rc, E, d) < 0)
			return diag_prefix(d, -EINVAL, "max_hosts_per_token on layer %u", l);
		p->has_host_limit[l] = true;
		log_info("layer %u: a token's %u experts lie on at most %u of %u hosts", l,
			 rc->top_k, M, blocks);
	}
	return 0;
}

/*
 * Hierarchical layers choose a group of experts first (mesh-tensorflow's
 * outer gate), then experts within it: with each group on one host, the
 * first level chooses hosts. Say for each such layer whether it does; a
 * group split over hosts still computes right, its tokens just visit more
 * hosts.
 */
static void hierarchical_note(const struct peers *p)
{
	for (uint32_t l = 0; l < moe_model_n_layers(p->model); l++) {
		const struct moe_layer *L = moe_model_layer(p->model, l);
		uint32_t per = L->router.experts_per_group, split = 0;

		if (L->router.kind != ROUTER_HIERARCHICAL || !p->layer_remote[l] || !per)
			continue;
		for (uint32_t g = 0; g < L->router.groups; g++)
			for (uint32_t e = g * per + 1; e < (g + 1) * per && e < L->n_experts; e++)
				if (p->host[l][e] != p->host[l][g * per]) {
					split++;
					break;
				}
		if (split)
			log_warning("layer %u: %u of its %u hierarchical groups span several hosts; "
				    "give each host whole groups (%u experts each) so that the "
				    "first level chooses hosts",
				    l, split, L->router.groups, per);
		else
			log_info("layer %u: each hierarchical group lies on one host: the first "
				 "level chooses hosts",
				 l);
	}
}

const struct router_config *peers_layer_router(const struct peers *p, uint32_t layer)
{
	if (!p || layer >= moe_model_n_layers(p->model) || !p->has_host_limit[layer])
		return NULL;
	return &p->host_limited[layer];
}

int peers_new(const struct peers_opts *o, struct peers **ret_peers, struct diag *d)
{
	const struct transport_handlers h = {
		.on_connected = on_connected, .on_accept = on_accept,
		.on_conn_error = on_conn_error, .on_message = on_message,
		.on_send_done = on_transfer_done, .on_recv_done = on_transfer_done,
	};
	struct transport_handlers hh = h;
	struct peer_addr at;
	struct peers *p;
	char why[256] = "";
	int r;

	*ret_peers = NULL;
	if (!o->cfg->listen[0] && !o->cfg->peers[0]) {
		if (o->cfg->expert_hosts[0])
			return diag_set(d, -EINVAL, "expert_hosts is set but neither listen nor "
						    "peers is");
		return 0;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return diag_set(d, -ENOMEM, "peers: out of memory");
	p->cfg = o->cfg;
	p->model = o->model;
	p->engine = o->engine;
	p->store = o->store;
	p->inbox_fd = -1;
	p->log_rl = (struct ratelimit)RATELIMIT_INIT(1000000000ull, 10);
	snprintf(p->name, sizeof(p->name), "%s", o->name ? o->name : "moed");
	p->model_id.n_layers = moe_model_n_layers(o->model);
	p->model_id.d_model = moe_model_n_layers(o->model) ? moe_model_layer(o->model, 0)->d_model : 0;
	pthread_mutex_init(&p->mu, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&p->done, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (!o->identity_hex || !o->identity_hex[0]) {
		r = diag_set(d, -EINVAL, "peers: the model has no identity to compare");
		goto fail;
	}
	r = peer_identity(o->model_path, o->identity_hex, p->model_id.hash, d);
	if (r < 0) {
		diag_prefix(d, r, "peers: the model's identity");
		goto fail;
	}
	r = peers_tables(p, d);
	if (r < 0)
		goto fail;
	r = host_limit_setup(p, d);
	if (r < 0)
		goto fail;
	hierarchical_note(p);
	p->inbox_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->inbox_fd < 0) {
		r = diag_set(d, -errno, "peers: eventfd: %m");
		goto fail;
	}
	r = serve_start(p);
	if (r < 0) {
		diag_set(d, r, "peers: cannot start the threads that serve peers");
		goto fail;
	}
	hh.ctx = p;
	r = (o->transport_new ? o->transport_new : transport_ucx_eager)(&hh, &p->t, why, sizeof(why));
	if (r < 0) {
		diag_set(d, r, "peers: cannot start UCX: %s", why);
		goto fail;
	}
	if (o->cfg->listen[0]) {
		uint16_t port;

		r = peer_addr_parse(o->cfg->listen, &at, d);
		if (r < 0)
			goto fail;
		r = transport_listen(p->t, at.addr, at.port, &port);
		if (r < 0) {
			diag_set(d, r, "peers: cannot listen on %s: %s", o->cfg->listen, strerror(-r));
			goto fail;
		}
		log_info("listening for peers on %s", o->cfg->listen);
	}
	p->now_ns = peers_now_ns();
	for (uint32_t i = 0; i < p->n_peers; i++)
		peer_connect(p, i, p->now_ns);
	*ret_peers = p;
	return 0;
fail:
	peers_free(p);
	return r;
}

struct peers *peers_free(struct peers *p)
{
	if (!p)
		return NULL;
	serve_stop(p);
	/* the transport next: no callback may run on what follows, and UCX lets go of buffers */
	p->t = transport_free(p->t);
	serve_free(p);
	while (p->pending) {
		struct peer_call *c = p->pending;

		p->pending = c->next;
		call_put(p, c);
	}
	/* calls no reactor pass took: their runners let go in collect, the reactor's is left */
	while (p->inbox) {
		struct peer_call *c = p->inbox;

		p->inbox = c->next;
		call_put(p, c);
	}
	if (p->inbox_fd >= 0)
		close(p->inbox_fd);
	for (uint32_t i = 0; i < p->n_peers; i++)
		free(p->peer[i].asks);
	for (uint32_t l = 0; p->host && l < moe_model_n_layers(p->model); l++)
		free(p->host[l]);
	free(p->host);
	free(p->n_experts);
	free(p->layer_remote);
	free(p->host_limited);
	free(p->has_host_limit);
	buf_cache_done(&p->bufs);
	pthread_cond_destroy(&p->done);
	pthread_mutex_destroy(&p->mu);
	free(p);
	return NULL;
}

/* ---- the reactor's entry points ---- */

int peers_fds(const struct peers *p, int fds[3])
{
	fds[0] = transport_event_fd(p->t);
	fds[1] = p->inbox_fd;
	fds[2] = executor_event_fd(p->serve);
	return 3;
}

void peers_fd_ready(struct peers *p, uint32_t i)
{
	p->fds_ready |= 1u << i;
}

int peers_poll(struct peers *p, uint64_t now)
{
	const uint32_t ready = p->fds_ready;
	int n = 0, k;

	p->now_ns = now;
	p->fds_ready = 0;
	n += calls_take_inbox(p, now, ready & 2);
	n += serve_take_done(p, ready & 4);
	/* ucp_worker_progress polls UCX's sockets: a syscall, only when it may find something */
	if (!(ready & 1) && !p->pending && !p->jobs && !n &&
	    now - p->last_progress_ns < PEERS_PROGRESS_NS)
		return 0;
	p->last_progress_ns = now;
	while ((k = transport_progress(p->t)) > 0)
		n += k;
	close_deferred(p);
	if (p->pending)
		calls_sweep(p, now);
	close_deferred(p);
	return n;
}

int peers_arm(struct peers *p)
{
	int r;

	/* UCX's order: progress until nothing is left, then arm (peers_poll may have skipped it) */
	while (transport_progress(p->t) > 0)
		;
	p->last_progress_ns = p->now_ns;
	r = transport_arm(p->t);

	if (r == -EAGAIN) {
		p->fds_ready |= 1; /* events wait: the next peers_poll() must progress */
		return r;
	}
	if (r < 0)
		log_error("peers: cannot arm the transport's event fd: %s", strerror(-r));
	return 0;
}

void peers_tick(struct peers *p, uint64_t now)
{
	uint64_t hello_wait = (uint64_t)p->cfg->peer_deadline_ms * 1000000ull;

	if (hello_wait < HELLO_MIN_WAIT_NS)
		hello_wait = HELLO_MIN_WAIT_NS;
	p->now_ns = now;
	calls_sweep(p, now);
	serve_tick(p, now);
	for (uint32_t i = 0; i < p->n_peers; i++)
		if (p->peer[i].state == PEER_CONNECTING &&
		    now - p->peer[i].state_since_ns > hello_wait)
			peers_peer_failed(p, i, -ETIMEDOUT, "no answer to HELLO", now);
	/* closed before a reconnect may be given the same connection number */
	close_deferred(p);
	for (uint32_t i = 0; i < p->n_peers; i++)
		if ((p->peer[i].state == PEER_DOWN || p->peer[i].state == PEER_REFUSED) &&
		    now >= p->peer[i].next_try_ns)
			peer_connect(p, i, now);
}

bool peers_busy(const struct peers *p)
{
	/* our own calls only: requests of other hosts are answered -ESHUTDOWN while we stop */
	return p->pending != NULL;
}

bool peers_in_flight(const struct peers *p)
{
	return p->pending || p->jobs;
}

void peers_stopping(struct peers *p)
{
	p->stopping = true;
}

const uint16_t *peers_layer_hosts(const struct peers *p, uint32_t layer)
{
	if (!p || layer >= moe_model_n_layers(p->model) || !p->layer_remote[layer])
		return NULL;
	return p->host[layer];
}
