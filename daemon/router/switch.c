/* SPDX-License-Identifier: MIT */
/*
 * switch: Switch Transformer top-1 routing (labml's SwitchFeedForward, with
 * token-order priority instead of labml's random drops, so that a server gives
 * the same answer twice). aux = E · Σ_i f_i · P_i (computed in stats.c).
 */
#include "router.h"

#include <errno.h>

int route_switch(const struct router_config *cfg, const float *logits, uint32_t n_tokens,
		 uint32_t n_experts, struct scratch *s, struct route_result *r)
{
	double *prob = scratch_alloc(s, sizeof(double) * n_tokens * n_experts);
	double *top = scratch_alloc(s, sizeof(double) * n_tokens);
	uint32_t *choice = scratch_alloc(s, sizeof(uint32_t) * n_tokens);
	uint32_t *order = scratch_alloc(s, sizeof(uint32_t) * n_tokens);
	uint32_t *seen = scratch_calloc(s, n_experts, sizeof(uint32_t));
	uint32_t cap;
	int ret;

	if (!prob || !top || !choice || !order || !seen)
		return -ENOMEM;
	gate_softmax(logits, n_tokens, n_experts, prob);
	for (uint32_t t = 0; t < n_tokens; t++) {
		const double *p = prob + (size_t)t * n_experts;

		choice[t] = gate_argmax(p, n_experts, -1);
		top[t] = p[choice[t]];
		r->tokens_per_expert[choice[t]]++;
		r->passthrough_scale[t] = cfg->scale == SCALE_NONE ? 1.0f : (float)top[t];
	}
	r->prob = prob;
	r->n_prob = n_experts;
	r->choice = choice;
	r->n_choice = 1;

	cap = capacity_of(cfg->capacity_factor, 1, n_tokens, n_experts, cfg->min_capacity);
	ret = capacity_priority_order(cfg->priority, top, n_tokens, s, order);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < n_tokens; i++) {
		uint32_t t = order[i], e = choice[t];

		if (seen[e]++ < cap) {
			r->expert[t] = (int32_t)e;
			r->weight[t] = (float)top[t];
		} else {
			r->token_dropped[t]++;
		}
	}
	return 0;
}
