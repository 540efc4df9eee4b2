/* SPDX-License-Identifier: MIT */
/*
 * rebalance: automatic replicas from measured load (setting
 * rebalance_interval_ms; off by default).
 *
 * Every interval the reactor hands the tokens each expert received since
 * the last look to rebalance_plan(), which proposes changes for the expert
 * store (expert_store_change()) per layer:
 *
 * - hot: an expert that received more than hot_percent of its layer's mean
 *   gets a copy on the node that had the least of that layer's load (each
 *   expert's tokens split evenly over its copies, as its tiles are), one
 *   copy per expert per round, the hottest first;
 * - cold: an expert with replicas that received less than its layer's mean
 *   loses its last copy that is not the load's own (dropping that one
 *   would free no budget), so that the budget goes where the load is.
 *
 * A round with no tokens in a layer changes nothing there. The planner is
 * pure: what the store accepts (the budget, copies queued meanwhile) is the
 * store's to decide, and refusals are harmless.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "placement/placement.h"
#include "store/expert_store.h"

/* Experts replicated per layer and round at most: a round moves a little, often. */
#define REBALANCE_MAX_HOT 4

struct rebalance_opts {
	uint32_t hot_percent; /* > 100 */
};

/*
 * Changes for @layer of @p given @tokens ([n_experts] received in the
 * window) and @loaded ([n_experts]: the node of each expert's loaded copy;
 * NULL: none is), at most @max_out into @out. Returns how many.
 */
size_t rebalance_plan(const struct placement *p, uint32_t layer, const uint64_t *tokens,
		      const uint32_t *loaded, const struct rebalance_opts *o,
		      struct expert_change *out, size_t max_out);

/* The reactor's side: the tokens seen at the last round, and when the next is due. */
struct rebalancer;
struct layer_stats;

/* For a model of @n_layers layers (stats as layer_stats_new() made them). 0 or -ENOMEM. */
int rebalancer_new(const struct layer_stats *stats, uint32_t n_layers,
		   struct rebalancer **ret_rebalancer);
/* NULL-safe; returns NULL. */
struct rebalancer *rebalancer_free(struct rebalancer *rb);

/*
 * Every @interval_ms: plan from the tokens @stats counted since the last
 * round and queue the changes in @store, at most 16 a round (refusals are
 * logged at debug level; a full budget ends the round's replicas, a full
 * queue the round). Cheap when not due; the reactor calls it on its tick.
 * The first round only takes the counts as its start.
 */
void rebalancer_tick(struct rebalancer *rb, struct expert_store *store,
		     const struct layer_stats *stats, uint64_t now_ns, uint32_t interval_ms,
		     const struct rebalance_opts *o);
