/* SPDX-License-Identifier: MIT */
/*
 * batch_exec: running the batches that clients queued, on the engine.
 *
 * Merge policy. Batches of one layer whose routing is per token (no
 * capacity, no balanced assignment: reactor.c, router_is_per_token) may run
 * as one engine batch, so each expert does one larger GEMM instead of one per
 * client. The oldest ready batch of such a layer waits at most
 * merge_window_us for partners, and not at all once every connected client
 * has a batch of that layer queued. merge_window_us = 0 runs every batch on
 * its own.
 *
 * Copies. A batch's input rows are copied out of the client's arena into
 * private staging once, before routing: the router's expert choices, and
 * everything indexed by them, must come from values the client cannot
 * change halfway (THREAT-MODEL.md). Results are computed into staging and
 * copied into each client's output buffer, so a client sees only its rows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "reactor/reactor_internal.h"
#include "router/router_config.h"
#include "util/log.h"

#define MAX_GROUP 256 /* batches per merged run */

struct group_member {
	uint32_t slot;
	struct pending_batch pb; /* copy: the session's FIFO slot is reused once popped */
	uint32_t row0;           /* first row of this batch in the staging buffers */
};

void staging_done(struct staging *st)
{
	free(st->x);
	free(st->y);
	free(st->expert);
	free(st->weight);
	free(st->tokens_per_expert);
	memset(st, 0, sizeof(*st));
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	void *q;

	if (need <= *cap)
		return 0;
	/* the slow path: staging grows to the largest run seen, then stays */
	q = realloc(*p, need * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = need;
	return 0;
}

static int staging_reserve(struct staging *st, size_t rows, size_t d, size_t route, size_t experts)
{
	size_t cap_rows = st->cap_rows, cap_route = st->cap_route;

	if (grow((void **)&st->x, &cap_rows, rows * d, sizeof(float)) < 0)
		return -ENOMEM;
	cap_rows = st->cap_rows;
	if (grow((void **)&st->y, &cap_rows, rows * d, sizeof(float)) < 0)
		return -ENOMEM;
	st->cap_rows = cap_rows;
	if (grow((void **)&st->expert, &cap_route, route, sizeof(int32_t)) < 0)
		return -ENOMEM;
	cap_route = st->cap_route;
	if (grow((void **)&st->weight, &cap_route, route, sizeof(float)) < 0)
		return -ENOMEM;
	st->cap_route = cap_route;
	return grow((void **)&st->tokens_per_expert, &st->cap_experts, experts, sizeof(int32_t));
}

static void account(struct reactor *r, struct session *s, const struct moe_sqe *sqe,
		    const struct moe_cqe *cqe)
{
	s->stats.batches++;
	s->stats.tokens += sqe->n_tokens;
	s->stats.dropped += cqe->n_dropped;
	if (cqe->flags & MOE_CQE_F_MERGED)
		s->stats.merged++;
	r->totals.batches++;
	r->totals.tokens += sqe->n_tokens;
	r->totals.dropped += cqe->n_dropped;
	if (cqe->status < 0) {
		s->stats.errors++;
		r->totals.errors++;
	}
}

/* Copy layer-k routing rows into the client's route_k-wide buffers. */
static void routing_copy_out(struct session *s, const struct moe_sqe *sqe, const int32_t *expert,
			     const float *weight, uint32_t k)
{
	int32_t *ce = (int32_t *)(void *)(s->region.arena + sqe->route_off);
	float *cw = (float *)(void *)(s->region.arena + sqe->weight_off);

	for (uint32_t t = 0; t < sqe->n_tokens; t++)
		for (uint32_t j = 0; j < sqe->route_k; j++) {
			size_t o = (size_t)t * sqe->route_k + j;

			ce[o] = j < k ? expert[(size_t)t * k + j] : -1;
			cw[o] = j < k ? weight[(size_t)t * k + j] : 0.0f;
		}
}

/* The batch's per-expert token counts (only ever an unmerged batch: see batch_mergeable). */
static void counts_copy_out(struct session *s, const struct moe_sqe *sqe, const int32_t *counts,
			    uint32_t n_experts, uint32_t max_experts)
{
	int32_t *c = (int32_t *)(void *)(s->region.arena + sqe->counts_off);

	for (uint32_t e = 0; e < max_experts; e++)
		c[e] = e < n_experts ? counts[e] : 0;
}

static void log_batch_error(struct session *s, const struct moe_sqe *sqe, int status,
			    const struct diag *d)
{
	if (session_log_allowed(s, reactor_now_ns()))
		log_info("client %u, layer %u, %u tokens: %s (%s)", s->id, sqe->layer, sqe->n_tokens,
			 d->msg[0] ? d->msg : "failed", strerror(-status));
}

/*
 * Run @n members (all of one layer; more than one only when mergeable) as
 * one engine batch. On an engine error of a merged run, each member runs
 * again alone, so one client's bad rows fail only its own batch. Each member
 * of a merged run is a segment of the engine batch and gets the statistics
 * of its own tokens, as if it had run alone.
 */
static void group_run(struct reactor *r, uint32_t layer_index, struct group_member *m, uint32_t n)
{
	const struct moe_layer *L = moe_model_layer(r->model, layer_index);
	struct router_config given_cfg;
	const struct router_config *cfg = NULL;
	struct route_given given;
	struct engine_batch b;
	uint32_t seg_rows[MAX_GROUP];
	struct engine_segment_stats seg[MAX_GROUP];
	struct diag d = { { 0 } };
	uint32_t d_model = L->d_model, k = r->layer_slots[layer_index], rows = 0;
	bool want_route = false;
	int ret;

	for (uint32_t i = 0; i < n; i++) {
		m[i].row0 = rows;
		seg_rows[i] = m[i].pb.sqe.n_tokens;
		rows += m[i].pb.sqe.n_tokens;
		want_route |= (m[i].pb.sqe.flags & MOE_SQE_F_ROUTE_RETURN) != 0;
	}
	if (n == 1 && (m[0].pb.sqe.flags & MOE_SQE_F_ROUTE_GIVEN)) {
		given_cfg = L->router;
		given_cfg.kind = ROUTER_GIVEN;
		given_cfg.top_k = m[0].pb.sqe.route_k;
		cfg = &given_cfg;
		k = m[0].pb.sqe.route_k;
	}
	ret = staging_reserve(&r->st, rows, d_model, (size_t)rows * k, L->n_experts);
	if (ret < 0) {
		diag_set(&d, ret, "out of memory for staging");
		goto complete;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct session *s = r->clients[m[i].slot].s;
		const struct moe_sqe *q = &m[i].pb.sqe;

		memcpy(r->st.x + (size_t)m[i].row0 * d_model, s->region.arena + q->in_off,
		       (size_t)q->n_tokens * d_model * sizeof(float));
		if (cfg) {
			memcpy(r->st.expert, s->region.arena + q->route_off,
			       (size_t)q->n_tokens * k * sizeof(int32_t));
			memcpy(r->st.weight, s->region.arena + q->weight_off,
			       (size_t)q->n_tokens * k * sizeof(float));
		}
	}
	given = (struct route_given){ .expert = r->st.expert, .weight = r->st.weight };
	b = (struct engine_batch){ .x = r->st.x, .n_tokens = rows, .given = cfg ? &given : NULL,
				   .output = r->st.y,
				   .expert_index = want_route ? r->st.expert : NULL,
				   .expert_weight = want_route ? r->st.weight : NULL,
				   .tokens_per_expert = r->st.tokens_per_expert,
				   .segment_rows = seg_rows, .n_segments = n > 1 ? n : 0,
				   .segment_stats = seg };
	ret = engine_forward(r->engine, L, cfg, &b, &d);
	if (ret == 0 && n == 1)
		seg[0] = (struct engine_segment_stats){ .n_dropped = b.n_dropped,
							.n_sanitized = b.n_sanitized,
							.aux_loss = b.aux_loss,
							.z_loss = b.z_loss,
							.has_z_loss = b.has_z_loss };
	r->totals.engine_runs++;
	if (ret < 0 && n > 1) {
		for (uint32_t i = 0; i < n; i++)
			group_run(r, layer_index, &m[i], 1);
		return;
	}
	if (ret == 0) {
		struct layer_stats *ls = &r->layers[layer_index];

		ls->batches += n;
		ls->tokens += rows;
		ls->dropped += b.n_dropped;
		for (uint32_t e = 0; e < L->n_experts; e++)
			ls->tokens_per_expert[e] += (uint64_t)r->st.tokens_per_expert[e];
		if (n > 1) {
			r->totals.merged_runs++;
			r->totals.merged_batches += n;
		}
	}
complete:
	for (uint32_t i = 0; i < n; i++) {
		struct session *s = r->clients[m[i].slot].s;
		const struct moe_sqe *q = &m[i].pb.sqe;
		struct moe_cqe cqe = { .user_data = q->user_data, .status = ret };

		if (ret == 0) {
			memcpy(s->region.arena + q->out_off, r->st.y + (size_t)m[i].row0 * d_model,
			       (size_t)q->n_tokens * d_model * sizeof(float));
			if (q->flags & MOE_SQE_F_ROUTE_RETURN) {
				routing_copy_out(s, q, r->st.expert + (size_t)m[i].row0 * k,
						 r->st.weight + (size_t)m[i].row0 * k, k);
				cqe.route_k = (uint16_t)k;
			}
			if (q->flags & MOE_SQE_F_COUNTS_RETURN)
				counts_copy_out(s, q, r->st.tokens_per_expert, L->n_experts,
						r->model_info.max_experts);
			cqe.n_dropped = seg[i].n_dropped;
			cqe.n_sanitized = seg[i].n_sanitized;
			cqe.aux_loss = (float)seg[i].aux_loss;
			cqe.z_loss = (float)seg[i].z_loss;
			cqe.flags = (uint16_t)((n > 1 ? MOE_CQE_F_MERGED : 0) |
					       (seg[i].has_z_loss ? MOE_CQE_F_Z_LOSS : 0));
		} else {
			log_batch_error(s, q, ret, &d);
		}
		session_complete(s, &cqe, true);
		account(r, s, q, &cqe);
	}
}

static bool batch_mergeable(const struct reactor *r, const struct moe_sqe *q)
{
	return r->cfg->merge_window_us && r->layer_mergeable[q->layer] &&
	       !(q->flags & (MOE_SQE_F_NO_MERGE | MOE_SQE_F_ROUTE_GIVEN | MOE_SQE_F_COUNTS_RETURN));
}

/* Pop the head batch of client @slot into @m. */
static void take_head(struct reactor *r, uint32_t slot, struct group_member *m)
{
	struct session *s = r->clients[slot].s;

	m->slot = slot;
	m->pb = *session_pending_peek(s);
	session_pending_pop(s);
}

int batches_run_ready(struct reactor *r, uint64_t now_ns, bool force, uint64_t *ret_wait_ns)
{
	uint64_t window = (uint64_t)r->cfg->merge_window_us * 1000, wait_ns = 0;
	struct group_member group[MAX_GROUP];
	int ran = 0;
	bool progress = true;

	while (progress) {
		progress = false;
		for (uint32_t i = 0; i < r->cfg->max_clients; i++) {
			struct session *s = r->clients[i].s;
			struct pending_batch *head = s ? session_pending_peek(s) : NULL;
			uint32_t layer, n = 0, partners = 0, rows;
			uint64_t age;

			if (!head)
				continue;
			if (!batch_mergeable(r, &head->sqe)) {
				take_head(r, i, &group[0]);
				group_run(r, group[0].pb.sqe.layer, group, 1);
				ran++;
				progress = true;
				reactor_handle_ready(r);
				continue;
			}
			/* count the clients whose head batch could join this one */
			layer = head->sqe.layer;
			for (uint32_t j = 0; j < r->cfg->max_clients; j++) {
				struct session *o = r->clients[j].s;
				struct pending_batch *oh = o ? session_pending_peek(o) : NULL;

				if (oh && oh->sqe.layer == layer && batch_mergeable(r, &oh->sqe))
					partners++;
			}
			age = now_ns - head->t_consumed_ns;
			if (!force && partners < r->n_clients && age < window) {
				uint64_t left = window - age;

				if (!wait_ns || left < wait_ns)
					wait_ns = left;
				continue;
			}
			/* run: this client's head plus every partner's, token budget permitting */
			rows = 0;
			for (uint32_t j = 0; j < r->cfg->max_clients && n < MAX_GROUP; j++) {
				struct session *o = r->clients[j].s;
				struct pending_batch *oh = o ? session_pending_peek(o) : NULL;

				if (!oh || oh->sqe.layer != layer || !batch_mergeable(r, &oh->sqe))
					continue;
				if (n && rows + oh->sqe.n_tokens > r->cfg->max_merged_tokens)
					continue;
				rows += oh->sqe.n_tokens;
				take_head(r, j, &group[n++]);
			}
			group_run(r, layer, group, n);
			ran += (int)n;
			progress = true;
			/* a client that died meanwhile: its queued batches are discarded */
			reactor_handle_ready(r);
		}
	}
	if (ret_wait_ns)
		*ret_wait_ns = wait_ns;
	return ran;
}
