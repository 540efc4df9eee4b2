/* SPDX-License-Identifier: MIT */
/*
 * given: routing that the client computed itself (its own router, or a
 * replay). Every index must be an expert of the layer or -1 (an empty slot),
 * every weight finite; capacity, if set, applies in token order like the
 * other families. No aux loss: the router is not ours.
 */
#include "router.h"

#include <errno.h>
#include <math.h>

int route_given(const struct moe_layer *layer, const struct router_config *cfg,
		const struct route_given *given, struct route_result *r, struct diag *d)
{
	const uint32_t T = r->n_tokens, k = r->k, E = layer->n_experts;
	uint32_t cap = capacity_of(cfg->capacity_factor, k, T, E, cfg->min_capacity);

	if (!given || !given->expert || !given->weight)
		return diag_set(d, -EINVAL, "router 'given' needs expert indices and weights "
					    "from the client");
	for (size_t i = 0; i < (size_t)T * k; i++) {
		int32_t e = given->expert[i];

		if (e < -1 || e >= (int32_t)E)
			return diag_set(d, -EINVAL, "given routing: token %zu slot %zu names "
						    "expert %d, the layer has %u",
					i / k, i % k, e, E);
		if (!isfinite(given->weight[i]))
			return diag_set(d, -EINVAL, "given routing: token %zu slot %zu has a "
						    "non-finite weight",
					i / k, i % k);
	}
	for (uint32_t t = 0; t < T; t++) {
		float top = 0;

		for (uint32_t j = 0; j < k; j++) {
			size_t slot = (size_t)t * k + j;
			int32_t e = given->expert[slot];

			if (e < 0)
				continue;
			if (given->weight[slot] > top)
				top = given->weight[slot];
			if ((uint32_t)r->tokens_per_expert[e]++ < cap) {
				r->expert[slot] = e;
				r->weight[slot] = given->weight[slot];
			} else {
				r->token_dropped[t]++;
			}
		}
		r->passthrough_scale[t] = cfg->scale == SCALE_NONE ? 1.0f : top;
	}
	return 0;
}
