/* SPDX-License-Identifier: MIT */
/*
 * gshard: top-2 gating in its two reference forms.
 *
 * meshtf (mesh-tensorflow _top_2_gating): second choice = argmax of the
 * probabilities without the first; both gates normalised before capacity;
 * the second-expert policy (all, none, threshold, random) decides whether the
 * second choice is dispatched; second choices queue behind the first choices
 * that survived capacity. aux = E² · mean_e(mean_t(p) · mean_t(first mask)).
 *
 * fairscale (Top2Gate, without the training-time Gumbel noise): second choice
 * from the logits without the first; second choices queue behind all first
 * choices; gates renormalised after capacity; aux without mesh-tf's E².
 */
#include "router.h"

#include <errno.h>
#include <float.h>

#include "util/rng.h"

static bool second_kept_by_policy(const struct router_config *cfg, double w2, uint64_t *rng)
{
	switch (cfg->second_policy) {
	case SECOND_ALL:
		return true;
	case SECOND_NONE:
		return false;
	case SECOND_THRESHOLD:
		return w2 > cfg->second_threshold;
	case SECOND_RANDOM:
		/* mesh-tf: keep with probability gate_2 / max(threshold, 1e-9) */
		return rng_uniform01(rng) < w2 / (cfg->second_threshold > 1e-9 ? cfg->second_threshold
									  : 1e-9);
	}
	return true;
}

int route_gshard(const struct router_config *cfg, const float *logits, uint32_t n_tokens,
		 uint32_t n_experts, bool dropless, struct scratch *s, struct route_result *r)
{
	const bool fairscale = cfg->top2_variant == TOP2_FAIRSCALE;
	double *prob = scratch_alloc(s, sizeof(double) * n_tokens * n_experts);
	uint32_t *i1 = scratch_alloc(s, sizeof(uint32_t) * n_tokens);
	uint32_t *i2 = scratch_alloc(s, sizeof(uint32_t) * n_tokens);
	bool *use2 = scratch_alloc(s, sizeof(bool) * n_tokens);
	double *top = scratch_alloc(s, sizeof(double) * n_tokens);
	uint32_t *order = scratch_alloc(s, sizeof(uint32_t) * n_tokens);
	uint32_t *seen = scratch_calloc(s, n_experts, sizeof(uint32_t));
	uint64_t rng = cfg->seed;
	uint32_t cap;
	int ret;

	if (!prob || !i1 || !i2 || !use2 || !top || !order || !seen)
		return -ENOMEM;
	gate_softmax(logits, n_tokens, n_experts, prob);

	for (uint32_t t = 0; t < n_tokens; t++) {
		const double *p = prob + (size_t)t * n_experts;
		double g1, g2, den;

		i1[t] = gate_argmax(p, n_experts, -1);
		/* fairscale masks the logits, mesh-tf the probabilities: softmax is
		 * monotone, so both are the argmax without the first choice. */
		i2[t] = gate_argmax(p, n_experts, i1[t]);
		g1 = p[i1[t]];
		g2 = p[i2[t]];
		top[t] = g1;
		r->passthrough_scale[t] = cfg->scale == SCALE_NONE ? 1.0f : (float)g1;
		if (fairscale) {
			use2[t] = true;
			continue;
		}
		den = g1 + g2 + 1e-9;
		r->weight[(size_t)t * 2] = (float)(g1 / den);
		r->weight[(size_t)t * 2 + 1] = (float)(g2 / den);
		use2[t] = second_kept_by_policy(cfg, g2 / den, &rng);
	}
	/* the aux loss needs the probabilities and the first choices (stats.c) */
	r->prob = prob;
	r->n_prob = n_experts;
	r->choice = i1;
	r->n_choice = 1;
	for (uint32_t t = 0; t < n_tokens; t++) {
		r->tokens_per_expert[i1[t]]++;
		if (use2[t])
			r->tokens_per_expert[i2[t]]++;
	}

	cap = dropless ? UINT32_MAX
		       : capacity_of(cfg->capacity_factor, 2, n_tokens, n_experts,
				     cfg->min_capacity);
	ret = capacity_priority_order(cfg->priority, top, n_tokens, s, order);
	if (ret < 0)
		return ret;
	/* First choices claim slots in priority order. */
	for (uint32_t i = 0; i < n_tokens; i++) {
		uint32_t t = order[i];

		if (seen[i1[t]]++ < cap)
			r->expert[(size_t)t * 2] = (int32_t)i1[t];
		else
			r->token_dropped[t]++;
	}
	/* Second choices queue behind the first: behind every first choice
	 * (fairscale), or only behind the survivors (mesh-tf). */
	for (uint32_t e = 0; e < n_experts; e++)
		if (!fairscale && seen[e] > cap)
			seen[e] = cap;
	for (uint32_t i = 0; i < n_tokens; i++) {
		uint32_t t = order[i];

		if (!use2[t])
			continue;
		if (seen[i2[t]]++ < cap)
			r->expert[(size_t)t * 2 + 1] = (int32_t)i2[t];
		else
			r->token_dropped[t]++;
	}

	for (uint32_t t = 0; t < n_tokens; t++) {
		float *w = r->weight + (size_t)t * 2;
		const int32_t *e = r->expert + (size_t)t * 2;

		if (fairscale) {
			const double *p = prob + (size_t)t * n_experts;
			double g1 = e[0] >= 0 ? p[i1[t]] : 0, g2 = e[1] >= 0 ? p[i2[t]] : 0;
			double den = g1 + g2 > FLT_EPSILON ? g1 + g2 : FLT_EPSILON;

			w[0] = (float)(g1 / den);
			w[1] = (float)(g2 / den);
		}
		if (e[0] < 0)
			w[0] = 0;
		if (e[1] < 0)
			w[1] = 0;
	}
	return 0;
}
