/* SPDX-License-Identifier: MIT */
/*
 * layer_stats: what moed counts per MoE layer for `moectl status`: batches,
 * tokens, dropped tokens, the tokens each expert received, the router's
 * auxiliary (load-balancing) loss, and the
 * latency of its batches (from the moment moed took a batch off its
 * client's ring to its completion: queueing, merging and computing).
 *
 * Thread-safety: the reactor thread's (runs are counted when they complete).
 */
#pragma once

#include <stdint.h>

#include "sched/latency_hist.h"

struct moe_model;

struct layer_stats {
	uint64_t batches, tokens, dropped;
	uint64_t *tokens_per_expert; /* [n_experts]; NULL for a layer that is not MoE */
	uint32_t n_experts;
	double aux_loss_sum;         /* the router's load-balancing loss, summed over batches */
	struct latency_hist latency; /* of the batches that succeeded */
};

/* One entry per layer of @model, zeroed. 0 or -ENOMEM. */
int layer_stats_new(const struct moe_model *model, struct layer_stats **ret_stats);
/* NULL-safe; returns NULL. */
struct layer_stats *layer_stats_free(struct layer_stats *stats, uint32_t n_layers);
