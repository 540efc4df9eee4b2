/* SPDX-License-Identifier: MIT */
/* rebalance: replicas from measured load; see rebalance.h. */
#include "store/rebalance.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sched/layer_stats.h"
#include "util/log.h"

/* The node without a copy of @ep that carries the least load; -1 when every node has one. */
static int coolest_node_without(const struct expert_place *ep, const double *node_load,
				uint32_t n_nodes)
{
	int best = -1;

	for (uint32_t n = 0; n < n_nodes; n++) {
		bool has = false;

		for (uint32_t c = 0; c < ep->n_copies; c++)
			has = has || ep->node[c] == n;
		if (!has && (best < 0 || node_load[n] < node_load[best]))
			best = (int)n;
	}
	return best;
}

/*
 * The experts above @limit, hottest first (ties: lower index), at most
 * REBALANCE_MAX_HOT of them, into @hot. Returns how many.
 */
static size_t hottest(const uint64_t *tokens, uint32_t n, double limit, uint32_t *hot)
{
	size_t n_hot = 0;

	for (uint32_t e = 0; e < n; e++) {
		size_t at = n_hot;

		if ((double)tokens[e] <= limit)
			continue;
		while (at > 0 && tokens[hot[at - 1]] < tokens[e])
			at--;
		if (at == REBALANCE_MAX_HOT)
			continue;
		if (n_hot < REBALANCE_MAX_HOT)
			n_hot++;
		memmove(&hot[at + 1], &hot[at], (n_hot - 1 - at) * sizeof(*hot));
		hot[at] = e;
	}
	return n_hot;
}

/* The last copy of @ep that is not the load's own (on @loaded_node); -1 when none. */
static int last_replica(const struct expert_place *ep, uint32_t loaded_node)
{
	for (uint32_t c = ep->n_copies; c-- > 0;)
		if (ep->node[c] != loaded_node)
			return (int)ep->node[c];
	return -1;
}

size_t rebalance_plan(const struct placement *p, uint32_t layer, const uint64_t *tokens,
		      const uint32_t *loaded, const struct rebalance_opts *o,
		      struct expert_change *out, size_t max_out)
{
	const struct layer_place *lp;
	double node_load[TOPOLOGY_MAX_NODES] = { 0 }, mean, sum = 0;
	uint32_t hot[REBALANCE_MAX_HOT];
	size_t n_out = 0, n_hot;

	if (layer >= p->n_layers || !p->layers[layer].n_experts)
		return 0;
	lp = &p->layers[layer];
	for (uint32_t x = 0; x < lp->n_experts; x++)
		sum += (double)tokens[x];
	placement_add_node_load(p, layer, tokens, lp->n_experts, node_load);
	if (sum == 0)
		return 0;
	mean = sum / lp->n_experts;

	n_hot = hottest(tokens, lp->n_experts, mean * o->hot_percent / 100.0, hot);
	for (size_t i = 0; i < n_hot && n_out < max_out; i++) {
		uint32_t e = hot[i];
		const struct expert_place *ep = &lp->experts[e];
		int node = coolest_node_without(ep, node_load, p->n_nodes);
		double share = (double)tokens[e] / ep->n_copies;
		double new_share = (double)tokens[e] / (ep->n_copies + 1);

		if (node < 0 || ep->n_copies >= PLACEMENT_MAX_COPIES)
			continue;
		out[n_out++] = (struct expert_change){ .op = EXPERT_REPLICATE, .layer = layer,
						       .expert = e, .node = (uint32_t)node };
		/* the new copy takes its share of the expert's tokens */
		for (uint32_t c = 0; c < ep->n_copies; c++)
			node_load[ep->node[c]] -= share - new_share;
		node_load[node] += new_share;
	}
	for (uint32_t x = 0; x < lp->n_experts && n_out < max_out; x++) {
		const struct expert_place *ep = &lp->experts[x];
		int node = last_replica(ep, loaded ? loaded[x] : UINT32_MAX);

		if (ep->n_copies > 1 && (double)tokens[x] < mean && node >= 0)
			out[n_out++] = (struct expert_change){ .op = EXPERT_DROP, .layer = layer,
							       .expert = x, .node = (uint32_t)node };
	}
	return n_out;
}

struct rebalancer {
	uint64_t next_ns;  /* 0: the first round is still to come */
	uint32_t n_layers;
	uint64_t **seen;   /* [n_layers][n_experts]: tokens_per_expert at the last round */
};

int rebalancer_new(const struct layer_stats *stats, uint32_t n_layers,
		   struct rebalancer **ret_rebalancer)
{
	struct rebalancer *rb = calloc(1, sizeof(*rb));

	if (!rb)
		return -ENOMEM;
	rb->n_layers = n_layers;
	rb->seen = calloc(n_layers ?: 1, sizeof(*rb->seen));
	if (!rb->seen)
		goto oom;
	for (uint32_t l = 0; l < n_layers; l++) {
		if (!stats[l].tokens_per_expert)
			continue;
		rb->seen[l] = calloc(stats[l].n_experts, sizeof(*rb->seen[l]));
		if (!rb->seen[l])
			goto oom;
	}
	*ret_rebalancer = rb;
	return 0;
oom:
	rebalancer_free(rb);
	return -ENOMEM;
}

struct rebalancer *rebalancer_free(struct rebalancer *rb)
{
	if (!rb)
		return NULL;
	for (uint32_t l = 0; rb->seen && l < rb->n_layers; l++)
		free(rb->seen[l]);
	free(rb->seen);
	free(rb);
	return NULL;
}

/* A round's changes queued at most: the queue stays open to people (moectl experts). */
#define REBALANCE_MAX_PER_ROUND 16

/* What one round may still do. */
struct round {
	unsigned queued;
	bool budget_full; /* a replica did not fit: no more this round */
	bool queue_full;
};

static void queue_changes(struct expert_store *store, const struct expert_change *c, size_t n,
			  const uint64_t *tokens, struct round *rd)
{
	static const char *const verbs[] = { [EXPERT_REPLICATE] = "replicate",
					     [EXPERT_MOVE] = "move",
					     [EXPERT_DROP] = "drop a replica of" };

	for (size_t i = 0; i < n && !rd->queue_full; i++) {
		struct diag d = { { 0 } };
		int64_t r;

		if (c[i].op == EXPERT_REPLICATE && rd->budget_full)
			continue;
		r = expert_store_change(store, &c[i], &d);
		if (r < 0) {
			log_debug("rebalance: %s layer %u expert %u on node %u not made: %s",
				  verbs[c[i].op], c[i].layer, c[i].expert, c[i].node, d.msg);
			rd->budget_full = rd->budget_full || r == -ENOSPC;
			rd->queue_full = r == -EAGAIN;
			continue;
		}
		log_info("rebalance: %s layer %u expert %u on node %u (%llu tokens in the last "
			 "round), epoch %lld",
			 verbs[c[i].op], c[i].layer, c[i].expert, c[i].node,
			 (unsigned long long)tokens[c[i].expert], (long long)r);
		rd->queue_full = ++rd->queued >= REBALANCE_MAX_PER_ROUND;
	}
}

void rebalancer_tick(struct rebalancer *rb, struct expert_store *store,
		     const struct layer_stats *stats, uint64_t now_ns, uint32_t interval_ms,
		     const struct rebalance_opts *o)
{
	struct expert_change changes[REBALANCE_MAX_PER_ROUND];
	struct expert_map *map;
	struct round rd = { 0 };
	bool first = rb->next_ns == 0;

	if (!first && now_ns < rb->next_ns)
		return;
	rb->next_ns = now_ns + (uint64_t)interval_ms * 1000000u;
	map = expert_store_map_get(store);
	for (uint32_t l = 0; l < rb->n_layers; l++) {
		const struct layer_stats *ls = &stats[l];
		uint64_t *window;
		uint32_t *loaded;
		size_t n;

		if (!rb->seen[l])
			continue;
		window = malloc(ls->n_experts * (sizeof(*window) + sizeof(*loaded)));
		if (!window)
			break; /* next round */
		loaded = (uint32_t *)(window + ls->n_experts);
		for (uint32_t e = 0; e < ls->n_experts; e++) {
			window[e] = ls->tokens_per_expert[e] - rb->seen[l][e];
			rb->seen[l][e] = ls->tokens_per_expert[e];
			/* another host computes it: its load is not this host's to spread */
			if (expert_store_is_remote(store, l, e))
				window[e] = 0;
			loaded[e] = expert_store_loaded_node(store, l, e);
		}
		/* BASE layers have no homes: their experts run everywhere */
		if (!first && !rd.queue_full && expert_map_homes(map, l)) {
			n = rebalance_plan(expert_map_placement(map), l, window, loaded, o, changes,
					   sizeof(changes) / sizeof(changes[0]));
			queue_changes(store, changes, n, window, &rd);
		}
		free(window);
	}
	expert_map_put(map);
}
