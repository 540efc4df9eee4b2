/* SPDX-License-Identifier: MIT */
/*
 * hierarchical: mesh-tensorflow's two-level MoE (transformer_moe_layer_v2),
 * here for one group of T tokens. An outer top-2 gate (mesh-tf variant,
 * dropless) picks expert groups (hosts, NUMA nodes); inside group g an inner
 * gate over its Y experts routes a token that chose g first with top-2 as
 * usual, and one that chose g second to its top inner expert only (mesh-tf's
 * importance 0.5 < 1). Expert e = g·Y + y, weight = outer × inner weight.
 * Slots: (first group: 2, second group: 2). aux = outer aux + the mean over
 * all X groups of each group's inner aux, taken over its buffer of T slots.
 */
#include "router.h"

#include <errno.h>

int route_hierarchical(const struct moe_layer *layer, const struct router_config *cfg,
		       const float *x, struct scratch *s, struct route_result *r)
{
	const uint32_t T = r->n_tokens, X = cfg->groups, Y = cfg->experts_per_group;
	struct router_config outer_cfg = *cfg;
	struct route_result outer = { .n_tokens = T, .k = 2, .n_experts = X };
	float *outer_logits = scratch_alloc(s, sizeof(float) * T * X);
	float *inner_logits = scratch_alloc(s, sizeof(float) * T * X * Y);
	double *second_prob = scratch_alloc(s, sizeof(double) * Y);
	double *first_prob = scratch_alloc(s, sizeof(double) * T * Y);
	uint32_t *first_choice = scratch_alloc(s, sizeof(uint32_t) * T);
	int ret;

	outer.expert = scratch_alloc(s, sizeof(int32_t) * T * 2);
	outer.weight = scratch_calloc(s, (size_t)T * 2, sizeof(float));
	outer.tokens_per_expert = scratch_calloc(s, X, sizeof(int32_t));
	outer.passthrough_scale = scratch_alloc(s, sizeof(float) * T);
	outer.token_dropped = scratch_calloc(s, T, sizeof(uint32_t));
	if (!outer_logits || !inner_logits || !second_prob || !first_prob || !first_choice ||
	    !outer.expert || !outer.weight || !outer.tokens_per_expert || !outer.passthrough_scale ||
	    !outer.token_dropped)
		return -ENOMEM;
	for (size_t i = 0; i < (size_t)T * 2; i++)
		outer.expert[i] = -1;

	outer_cfg.top2_variant = TOP2_MESHTF;
	gate_logits(x, T, layer->d_model, layer->outer_w, NULL, X, outer_logits);
	ret = route_gshard(&outer_cfg, outer_logits, T, X, true, s, &outer);
	if (ret < 0)
		return ret;
	/* All X·Y inner logits of every token in one GEMM: inner_w is [X][Y][d],
	 * i.e. [X·Y][d] row-major. */
	gate_logits(x, T, layer->d_model, layer->inner_w, NULL, X * Y, inner_logits);

	for (uint32_t g = 0; g < X; g++) {
		for (uint32_t t = 0; t < T; t++) {
			uint32_t slot;
			uint32_t i1, i2;
			double g1, g2, den;
			double *inner_prob;
			bool first;

			if (outer.expert[(size_t)t * 2] == (int32_t)g)
				slot = 0;
			else if (outer.expert[(size_t)t * 2 + 1] == (int32_t)g)
				slot = 1;
			else
				continue;
			first = slot == 0;
			/* the first group's inner probabilities stay for the aux loss */
			inner_prob = first ? first_prob + (size_t)t * Y : second_prob;
			gate_softmax(inner_logits + ((size_t)t * X + g) * Y, 1, Y, inner_prob);
			i1 = gate_argmax(inner_prob, Y, -1);
			/* A second-choice token has no first inner expert: its
			 * "second" is the argmax of all Y, with gate 1 (g1 = 0). */
			i2 = first ? gate_argmax(inner_prob, Y, i1) : i1;
			g1 = first ? inner_prob[i1] : 0;
			g2 = inner_prob[i2];
			den = g1 + g2 + 1e-9;
			if (first) {
				first_choice[t] = i1;
				r->expert[(size_t)t * 4 + 2 * slot] = (int32_t)(g * Y + i1);
				r->weight[(size_t)t * 4 + 2 * slot] =
					(float)(outer.weight[(size_t)t * 2 + slot] * (g1 / den));
				r->tokens_per_expert[g * Y + i1]++;
			}
			r->expert[(size_t)t * 4 + 2 * slot + 1] = (int32_t)(g * Y + i2);
			r->weight[(size_t)t * 4 + 2 * slot + 1] =
				(float)(outer.weight[(size_t)t * 2 + slot] * (g2 / den));
			r->tokens_per_expert[g * Y + i2]++;
		}
	}
	/* stats.c: the outer gate's aux from its probabilities and first
	 * choices, each group's inner aux from its first-choice tokens */
	r->prob = outer.prob;
	r->n_prob = X;
	r->choice = outer.choice;
	r->n_choice = outer.n_choice;
	r->inner_prob = first_prob;
	r->inner_choice = first_choice;
	return 0;
}
