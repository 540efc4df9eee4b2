/* SPDX-License-Identifier: MIT */
/* sched: fairness, merging, and the reactor's side of runs; see sched.h. */
#include "sched/sched.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "compute/activations.h"
#include "exec/executor.h"
#include "peers/peers.h"
#include "router/router_config.h"
#include "sched/run.h"
#include "util/log.h"
#include "util/spin.h"

struct sched {
	const struct moed_config *cfg;
	struct expert_store *store;
	const struct moe_model *model; /* the store's */
	struct engine *engine;
	struct client_slot *clients;
	const uint32_t *live;
	const uint32_t *layer_slots;
	uint32_t max_experts;
	struct peers *peers;           /* NULL: one host */
	bool *layer_mergeable;
	/*
	 * Per layer, for the inline bound: the bytes of one routed expert's
	 * weights (UINT64_MAX: experts that never compute inline) and of what
	 * every token reads (router, shared experts).
	 */
	uint64_t *layer_expert_bytes, *layer_fixed_bytes;
	uint32_t n_layers;

	struct executor *executor;
	struct run *runs;   /* [n_runs] */
	bool *run_busy;     /* [n_runs] */
	uint32_t n_runs, in_flight;
	uint32_t cursor;    /* the position in live[] the next pass starts from */

	struct sched_totals totals;
	struct layer_stats *layers;
};

/* What one routed expert of @L reads per run, and what every run of @L reads besides. */
static void layer_weight_bytes(const struct moe_layer *L, uint64_t *ret_expert,
			       uint64_t *ret_fixed)
{
	const struct ffn_weights *f = L->n_experts ? &L->experts[0].ffn : NULL;
	uint64_t dm = L->d_model, fixed = dm * L->n_experts * sizeof(float); /* the gate */

	*ret_expert = UINT64_MAX;
	/* FFN experts, by their shape (BASE layers' sublayers are never inline) */
	if (f && L->router.kind != ROUTER_BASE)
		*ret_expert = dm * f->d_ff * (activation_is_gated(L->router.activation) ? 3 : 2) *
			      weight_dtype_size(f->dtype);
	if (L->has_shared)
		fixed += dm * L->shared.d_ff * (L->shared.w3 ? 3 : 2) *
			 weight_dtype_size(L->shared.dtype);
	*ret_fixed = fixed;
}

int sched_new(const struct sched_params *p, struct sched **ret_sched, struct diag *d)
{
	struct sched *s;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return diag_set(d, -ENOMEM, "out of memory");
	s->cfg = p->cfg;
	s->store = p->store;
	s->model = expert_store_model(p->store);
	s->engine = p->engine;
	s->clients = p->clients;
	s->live = p->live;
	s->layer_slots = p->layer_slots;
	s->max_experts = p->max_experts;
	s->peers = p->peers;
	s->n_layers = moe_model_n_layers(s->model);
	s->n_runs = p->cfg->runs_in_flight;
	s->layer_mergeable = calloc(s->n_layers ? s->n_layers : 1, sizeof(*s->layer_mergeable));
	s->layer_expert_bytes = calloc(s->n_layers ? s->n_layers : 1, sizeof(uint64_t));
	s->layer_fixed_bytes = calloc(s->n_layers ? s->n_layers : 1, sizeof(uint64_t));
	s->runs = calloc(s->n_runs, sizeof(*s->runs));
	s->run_busy = calloc(s->n_runs, sizeof(*s->run_busy));
	if (!s->layer_mergeable || !s->layer_expert_bytes || !s->layer_fixed_bytes || !s->runs ||
	    !s->run_busy) {
		r = diag_set(d, -ENOMEM, "out of memory");
		goto err;
	}
	for (uint32_t l = 0; l < s->n_layers; l++) {
		const struct moe_layer *L = moe_model_layer(s->model, l);

		s->layer_mergeable[l] = L && router_config_per_token(&L->router);
		if (L)
			layer_weight_bytes(L, &s->layer_expert_bytes[l], &s->layer_fixed_bytes[l]);
		else
			s->layer_expert_bytes[l] = UINT64_MAX;
	}
	for (uint32_t i = 0; s->peers && i < s->n_runs; i++)
		if (peers_batch_new(s->peers, &s->runs[i].peers_batch) < 0) {
			r = diag_set(d, -ENOMEM, "out of memory");
			goto err;
		}
	r = layer_stats_new(s->model, &s->layers);
	if (r < 0) {
		diag_set(d, r, "out of memory");
		goto err;
	}
	r = executor_new(s->n_runs, &s->executor);
	if (r < 0) {
		diag_set(d, r, "cannot start %u runner threads: %s", s->n_runs, strerror(-r));
		goto err;
	}
	*ret_sched = s;
	return 0;
err:
	sched_free(s);
	return r;
}

struct sched *sched_free(struct sched *s)
{
	if (!s)
		return NULL;
	/* first: a runner may still be computing into a run's buffers */
	executor_free(s->executor);
	for (uint32_t i = 0; s->runs && i < s->n_runs; i++) {
		/* a run still busy at exit holds its map */
		s->runs[i].map = expert_map_put(s->runs[i].map);
		s->runs[i].peers_batch = peers_batch_free(s->runs[i].peers_batch);
		run_done(&s->runs[i]);
	}
	layer_stats_free(s->layers, s->n_layers);
	free(s->runs);
	free(s->run_busy);
	free(s->layer_mergeable);
	free(s->layer_expert_bytes);
	free(s->layer_fixed_bytes);
	free(s);
	return NULL;
}

bool sched_prepare_sleep(struct sched *s)
{
	return executor_watcher_sleep(s->executor);
}

void sched_clear_sleep(struct sched *s)
{
	executor_watcher_polling(s->executor);
}

int sched_event_fd(const struct sched *s)
{
	return executor_event_fd(s->executor);
}

uint32_t sched_in_flight(const struct sched *s)
{
	return s->in_flight;
}

const struct sched_totals *sched_totals(const struct sched *s)
{
	return &s->totals;
}

const struct layer_stats *sched_layer_stats(const struct sched *s)
{
	return s->layers;
}

static bool batch_mergeable(const struct sched *s, const struct moe_sqe *q)
{
	return s->cfg->merge_window_us && s->layer_mergeable[q->layer] &&
	       !(q->flags & (MOE_SQE_F_NO_MERGE | MOE_SQE_F_ROUTE_GIVEN | MOE_SQE_F_COUNTS_RETURN));
}

/* The head batch of client @slot if the client may start a run now. */
static struct pending_batch *ready_head(struct sched *s, uint32_t slot)
{
	struct session *c = s->clients[slot].s;

	if (!c || c->run_in_flight)
		return NULL;
	return session_pending_peek(c);
}

static struct run *run_get_free(struct sched *s)
{
	for (uint32_t i = 0; i < s->n_runs; i++)
		if (!s->run_busy[i]) {
			s->run_busy[i] = true;
			s->in_flight++;
			return &s->runs[i];
		}
	return NULL;
}

static void run_put(struct sched *s, struct run *run)
{
	run->map = expert_map_put(run->map);
	run->homes = NULL;
	s->run_busy[run - s->runs] = false;
	s->in_flight--;
}

/* Move the head batch of client @slot into the run as its next member. */
static void run_add_member(struct sched *s, struct run *run, uint32_t slot)
{
	struct session *c = s->clients[slot].s;
	struct run_member *m = &run->members[run->n_members++];

	*m = (struct run_member){ .slot = slot, .gen = s->clients[slot].gen,
				  .sqe = session_pending_peek(c)->sqe, .row0 = run->rows,
				  .t_consumed_ns = session_pending_peek(c)->t_consumed_ns };
	session_pending_pop(c);
	c->run_in_flight = true;
	run->rows += m->sqe.n_tokens;
	run->want_route |= (m->sqe.flags & MOE_SQE_F_ROUTE_RETURN) != 0;
}

static void run_prepare(struct sched *s, struct run *run, uint32_t layer)
{
	const struct moe_layer *L = moe_model_layer(s->model, layer);

	run->item.run = run_execute;
	run->engine = s->engine;
	run->layer = L;
	run->map = expert_store_map_get(s->store);
	run->homes = expert_map_homes(run->map, layer);
	run->has_remote = run->peers_batch &&
			  peers_batch_remote(run->peers_batch, layer, &run->remote);
	run->host_cfg = peers_layer_router(s->peers, layer);
	run->layer_index = layer;
	run->k = s->layer_slots[layer];
	run->given = false;
	run->want_route = false;
	run->n_members = 0;
	run->rows = 0;
}

static void run_complete_members_now(struct sched *s, struct run *run, int status,
				     const char *why, uint64_t now_ns);
static void run_finish(struct sched *s, struct run *run, uint64_t now_ns);

/*
 * Whether @run computes here, on the reactor thread, rather than on a
 * runner: when the weights it may read (every expert its rows can reach,
 * the router and shared experts) are at most inline_run_bytes. Such a run
 * computes in about as long as its hand-off to a runner takes (a few
 * microseconds: the runner's wake-up, and where a spinning client and this
 * loop hold every CPU, two thread switches to lend the runner the reactor's
 * CPU and take it back), so computing it here halves its round trip and
 * delays the reactor's next pass by no more than the hand-off would have
 * cost it. A run with experts on other hosts always goes to a runner: it
 * waits on the network.
 */
static bool run_computes_inline(const struct sched *s, const struct run *run)
{
	uint64_t limit = s->cfg->inline_run_bytes, fixed, per_expert, reach;

	if (!limit || run->has_remote)
		return false;
	per_expert = s->layer_expert_bytes[run->layer_index];
	fixed = s->layer_fixed_bytes[run->layer_index];
	if (per_expert == UINT64_MAX || fixed > limit)
		return false;
	reach = (uint64_t)run->rows * run->k;
	if (reach > run->layer->n_experts)
		reach = run->layer->n_experts;
	/* a division, not reach * per_expert: that product may pass 2^64 */
	return per_expert == 0 || reach <= (limit - fixed) / per_expert;
}

/*
 * Copy the members' rows (and given routing) out of their arenas into the
 * run's staging and hand the run to the executor.
 */
static void run_start(struct sched *s, struct run *run, uint64_t now_ns)
{
	const struct moe_layer *L = run->layer;
	const struct moe_sqe *q0 = &run->members[0].sqe;
	int ret;

	if (run->n_members == 1 && (q0->flags & MOE_SQE_F_ROUTE_GIVEN)) {
		run->given = true;
		run->given_cfg = L->router;
		run->given_cfg.kind = ROUTER_GIVEN;
		run->given_cfg.top_k = q0->route_k;
		run->k = q0->route_k;
	}
	ret = run_reserve(run, run->rows, L->d_model, (size_t)run->rows * run->k, L->n_experts);
	if (ret < 0) {
		run_complete_members_now(s, run, ret, "out of memory for staging", now_ns);
		return;
	}
	for (uint32_t i = 0; i < run->n_members; i++) {
		const struct run_member *m = &run->members[i];
		const uint8_t *arena = s->clients[m->slot].s->region.arena;

		memcpy(run->x + (size_t)m->row0 * L->d_model, arena + m->sqe.in_off,
		       (size_t)m->sqe.n_tokens * L->d_model * sizeof(float));
		if (run->given) {
			memcpy(run->expert, arena + m->sqe.route_off,
			       (size_t)m->sqe.n_tokens * run->k * sizeof(int32_t));
			memcpy(run->weight, arena + m->sqe.weight_off,
			       (size_t)m->sqe.n_tokens * run->k * sizeof(float));
		}
	}
	if (run_computes_inline(s, run)) {
		s->totals.inline_runs++;
		run_execute(&run->item);
		run_finish(s, run, spin_now_ns());
		return;
	}
	executor_submit(s->executor, &run->item);
}

int sched_start_ready(struct sched *s, uint32_t n_clients, uint64_t now_ns, bool force,
		      uint64_t *ret_wait_ns)
{
	const uint32_t n = n_clients;
	uint64_t window = (uint64_t)s->cfg->merge_window_us * 1000, wait_ns = 0;
	uint32_t first = n ? s->cursor % n : 0;
	int started = 0;

	/*
	 * Round robin over the connected clients (live[], not the whole slot
	 * table: a busy-polling pass must cost little with few clients): a
	 * pass starts from the client after the last one that got a run, so
	 * when runs are scarce they go to every client in turn. A client
	 * leaving moves the last entry into its place, which shifts the turn
	 * of one client by one pass at most.
	 */
	for (uint32_t step = 0; step < n && s->in_flight < s->n_runs; step++) {
		uint32_t pos = (first + step) % n, i = s->live[pos], layer, partners = 0;
		struct pending_batch *head = ready_head(s, i);
		struct run *run;
		bool mergeable;
		uint64_t age;

		if (!head)
			continue;
		layer = head->sqe.layer;
		mergeable = batch_mergeable(s, &head->sqe);
		if (mergeable && n > 1) {
			/* count the clients whose head batch could join this one */
			for (uint32_t j = 0; j < n; j++) {
				struct pending_batch *oh = ready_head(s, s->live[j]);

				if (oh && oh->sqe.layer == layer && batch_mergeable(s, &oh->sqe))
					partners++;
			}
			age = now_ns - head->t_consumed_ns;
			if (!force && partners < n && age < window) {
				uint64_t left = window - age;

				if (!wait_ns || left < wait_ns)
					wait_ns = left;
				continue;
			}
		}
		/* this client's head first, then its partners in round-robin order */
		run = run_get_free(s);
		run_prepare(s, run, layer);
		run_add_member(s, run, i);
		for (uint32_t o = 1; mergeable && o < n && run->n_members < RUN_MAX_MEMBERS; o++) {
			uint32_t j = s->live[(pos + o) % n];
			struct pending_batch *oh = ready_head(s, j);

			if (!oh || oh->sqe.layer != layer || !batch_mergeable(s, &oh->sqe))
				continue;
			if (run->rows + oh->sqe.n_tokens > s->cfg->max_merged_tokens)
				continue;
			run_add_member(s, run, j);
		}
		started += (int)run->n_members;
		s->cursor = (pos + 1) % n;
		run_start(s, run, now_ns);
	}
	if (ret_wait_ns)
		*ret_wait_ns = wait_ns;
	return started;
}

/* Routing rows of width @k into the client's route_k-wide buffers. */
static void routing_copy_out(uint8_t *arena, const struct moe_sqe *sqe, const int32_t *expert,
			     const float *weight, uint32_t k)
{
	int32_t *ce = (int32_t *)(void *)(arena + sqe->route_off);
	float *cw = (float *)(void *)(arena + sqe->weight_off);

	for (uint32_t t = 0; t < sqe->n_tokens; t++)
		for (uint32_t j = 0; j < sqe->route_k; j++) {
			size_t o = (size_t)t * sqe->route_k + j;

			ce[o] = j < k ? expert[(size_t)t * k + j] : -1;
			cw[o] = j < k ? weight[(size_t)t * k + j] : 0.0f;
		}
}

/* The batch's per-expert token counts (only ever a run of one: see batch_mergeable). */
static void counts_copy_out(uint8_t *arena, const struct moe_sqe *sqe, const int32_t *counts,
			    uint32_t n_experts, uint32_t max_experts)
{
	int32_t *c = (int32_t *)(void *)(arena + sqe->counts_off);

	for (uint32_t e = 0; e < max_experts; e++)
		c[e] = e < n_experts ? counts[e] : 0;
}

static void account(struct sched *s, struct session *c, const struct moe_sqe *sqe,
		    const struct moe_cqe *cqe)
{
	c->stats.batches++;
	c->stats.tokens += sqe->n_tokens;
	c->stats.dropped += cqe->n_dropped;
	if (cqe->flags & MOE_CQE_F_MERGED)
		c->stats.merged++;
	s->totals.batches++;
	s->totals.tokens += sqe->n_tokens;
	s->totals.dropped += cqe->n_dropped;
	if (cqe->status < 0) {
		c->stats.errors++;
		s->totals.errors++;
	}
}

/* The member's client, or NULL when it left while the run was in flight. */
static struct session *member_session(struct sched *s, const struct run_member *m)
{
	struct client_slot *cs = &s->clients[m->slot];

	return cs->s && cs->gen == m->gen ? cs->s : NULL;
}

static void member_complete(struct sched *s, struct run *run, struct run_member *m,
			    uint64_t now_ns)
{
	const struct moe_layer *L = run->layer;
	const struct moe_sqe *q = &m->sqe;
	struct session *c = member_session(s, m);
	struct moe_cqe cqe = { .user_data = q->user_data, .status = m->status };

	if (!c)
		return; /* its client is gone: the results have nowhere to go */
	c->run_in_flight = false;
	if (m->status == 0) {
		memcpy(c->region.arena + q->out_off, run->y + (size_t)m->row0 * L->d_model,
		       (size_t)q->n_tokens * L->d_model * sizeof(float));
		if (q->flags & MOE_SQE_F_ROUTE_RETURN) {
			routing_copy_out(c->region.arena, q, run->expert + (size_t)m->row0 * run->k,
					 run->weight + (size_t)m->row0 * run->k, run->k);
			cqe.route_k = (uint16_t)run->k;
		}
		if (q->flags & MOE_SQE_F_COUNTS_RETURN)
			counts_copy_out(c->region.arena, q, run->counts, L->n_experts,
					s->max_experts);
		cqe.n_dropped = m->n_dropped;
		cqe.n_sanitized = m->n_sanitized;
		cqe.aux_loss = (float)m->aux_loss;
		cqe.z_loss = (float)m->z_loss;
		cqe.flags = (uint16_t)((m->merged ? MOE_CQE_F_MERGED : 0) |
				       (m->has_z_loss ? MOE_CQE_F_Z_LOSS : 0));
		latency_hist_add(&s->layers[run->layer_index].latency,
				 (now_ns - m->t_consumed_ns) / 1000);
		s->layers[run->layer_index].aux_loss_sum += m->aux_loss;
	} else if (session_log_allowed(c, now_ns)) {
		log_info("client %u, layer %u, %u tokens: %s (%s)", c->id, q->layer, q->n_tokens,
			 m->why, strerror(-m->status));
	}
	session_complete(c, &cqe, true);
	account(s, c, q, &cqe);
}

static void run_count(struct sched *s, struct run *run)
{
	struct layer_stats *ls = &s->layers[run->layer_index];
	uint32_t ok = 0;
	uint64_t rows = 0, dropped = 0;

	for (uint32_t i = 0; i < run->n_members; i++)
		if (run->members[i].status == 0) {
			ok++;
			rows += run->members[i].sqe.n_tokens;
			dropped += run->members[i].n_dropped;
		}
	ls->batches += ok;
	ls->tokens += rows;
	ls->dropped += dropped;
	for (uint32_t e = 0; run->engine_calls && e < run->layer->n_experts; e++)
		ls->tokens_per_expert[e] += run->counts_total[e];
	s->totals.engine_runs += run->engine_calls;
	if (run->merged_ok) {
		s->totals.merged_runs++;
		s->totals.merged_batches += run->n_live;
	}
}

/* A run that never reached the executor (no staging): every member fails with @status. */
static void run_complete_members_now(struct sched *s, struct run *run, int status,
				     const char *why, uint64_t now_ns)
{
	run->engine_calls = 0;
	run->merged_ok = false;
	for (uint32_t i = 0; i < run->n_members; i++) {
		run->members[i].status = status;
		snprintf(run->members[i].why, sizeof(run->members[i].why), "%s", why);
		member_complete(s, run, &run->members[i], now_ns);
	}
	run_put(s, run);
}

/* A computed run: its counters, its members' results and CQEs; the run is free again. */
static void run_finish(struct sched *s, struct run *run, uint64_t now_ns)
{
	run_count(s, run);
	for (uint32_t i = 0; i < run->n_members; i++)
		member_complete(s, run, &run->members[i], now_ns);
	run_put(s, run);
}

int sched_complete_done(struct sched *s, uint64_t now_ns)
{
	struct exec_item *it = executor_take_done(s->executor), *next;
	int completed = 0;

	for (; it; it = next) {
		struct run *run = (struct run *)it;

		next = it->next;
		completed += (int)run->n_members;
		run_finish(s, run, now_ns);
	}
	return completed;
}
