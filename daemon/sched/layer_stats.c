/* SPDX-License-Identifier: MIT */
/* layer_stats: per-layer counters; see layer_stats.h. */
#include "sched/layer_stats.h"

#include <errno.h>
#include <stdlib.h>

#include "model/model.h"

int layer_stats_new(const struct moe_model *model, struct layer_stats **ret_stats)
{
	uint32_t n = moe_model_n_layers(model);
	struct layer_stats *ls = calloc(n ? n : 1, sizeof(*ls));

	if (!ls)
		return -ENOMEM;
	for (uint32_t l = 0; l < n; l++) {
		const struct moe_layer *L = moe_model_layer(model, l);

		if (!L)
			continue;
		ls[l].n_experts = L->n_experts;
		ls[l].tokens_per_expert = calloc(L->n_experts, sizeof(uint64_t));
		if (!ls[l].tokens_per_expert) {
			layer_stats_free(ls, n);
			return -ENOMEM;
		}
	}
	*ret_stats = ls;
	return 0;
}

struct layer_stats *layer_stats_free(struct layer_stats *stats, uint32_t n_layers)
{
	if (!stats)
		return NULL;
	for (uint32_t l = 0; l < n_layers; l++)
		free(stats[l].tokens_per_expert);
	free(stats);
	return NULL;
}
