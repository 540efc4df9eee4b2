/* SPDX-License-Identifier: MIT */
/*
 * base: BASE layers routing (Lewis et al. 2021, fairseq BaseLayer). The
 * affinity of a token and an expert is x·c_e with c_e the expert's centroid.
 * Greedy mode takes the best expert per token (BASE at inference); balanced
 * mode gives every expert ceil(T/E) slots at most (exactly T/E when E divides
 * T) and maximises the total affinity (base_assign.c). The expert's output is
 * later mixed as σ(x·c_e)·E(x) + (1−σ)·x, so the router keeps σ per token.
 */
#include "router.h"

#include <errno.h>
#include <math.h>

#include "base_assign.h"

int route_base(const struct moe_layer *layer, const struct router_config *cfg, const float *x,
	       struct scratch *s, struct route_result *r, struct diag *d)
{
	const uint32_t T = r->n_tokens, E = layer->n_experts;
	float *aff = scratch_alloc(s, sizeof(float) * T * E);
	int32_t *choice = scratch_alloc(s, sizeof(int32_t) * T);
	double *row = scratch_alloc(s, sizeof(double) * E);
	int ret;

	r->base_mix = scratch_alloc(s, sizeof(float) * T);
	if (!aff || !choice || !row || !r->base_mix)
		return -ENOMEM;
	gate_logits(x, T, layer->d_model, layer->centroids, NULL, E, aff);

	if (cfg->base_mode == BASE_BALANCED) {
		ret = base_assign_balanced(aff, T, E, (T + E - 1) / E, s, choice);
		if (ret < 0)
			return diag_set(d, ret, "base balanced assignment of %u tokens to %u "
						"experts failed",
					T, E);
	} else {
		for (uint32_t t = 0; t < T; t++) {
			for (uint32_t e = 0; e < E; e++)
				row[e] = aff[(size_t)t * E + e];
			choice[t] = (int32_t)gate_argmax(row, E, -1);
		}
	}
	for (uint32_t t = 0; t < T; t++) {
		int32_t e = choice[t];

		r->expert[t] = e;
		r->weight[t] = 1.0f;
		r->tokens_per_expert[e]++;
		r->base_mix[t] = (float)(1.0 / (1.0 + exp(-(double)aff[(size_t)t * E + e])));
	}
	return 0;
}
