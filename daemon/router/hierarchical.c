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
#include <string.h>

int route_hierarchical(const struct moe_layer *layer, const struct router_config *cfg,
		       const float *x, struct scratch *s, struct route_result *r)
{
	const uint32_t T = r->n_tokens, X = cfg->groups, Y = cfg->experts_per_group;
	struct router_config outer_cfg = *cfg;
	struct route_result outer = { .n_tokens = T, .k = 2, .n_experts = X };
	float *outer_logits = scratch_alloc(s, sizeof(float) * T * X);
	float *inner_logits = scratch_alloc(s, sizeof(float) * T * X * Y);
	double *inner_prob = scratch_alloc(s, sizeof(double) * Y);
	double *importance_sum = scratch_alloc(s, sizeof(double) * Y);
	uint32_t *first_count = scratch_alloc(s, sizeof(uint32_t) * Y);
	double inner_aux = 0;
	int ret;

	outer.expert = scratch_alloc(s, sizeof(int32_t) * T * 2);
	outer.weight = scratch_calloc(s, (size_t)T * 2, sizeof(float));
	outer.tokens_per_expert = scratch_calloc(s, X, sizeof(int32_t));
	outer.passthrough_scale = scratch_alloc(s, sizeof(float) * T);
	if (!outer_logits || !inner_logits || !inner_prob || !importance_sum || !first_count ||
	    !outer.expert || !outer.weight || !outer.tokens_per_expert || !outer.passthrough_scale)
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
		double aux_g = 0;

		memset(importance_sum, 0, sizeof(double) * Y);
		memset(first_count, 0, sizeof(uint32_t) * Y);
		for (uint32_t t = 0; t < T; t++) {
			uint32_t slot;
			uint32_t i1, i2;
			double g1, g2, den;
			bool first;

			if (outer.expert[(size_t)t * 2] == (int32_t)g)
				slot = 0;
			else if (outer.expert[(size_t)t * 2 + 1] == (int32_t)g)
				slot = 1;
			else
				continue;
			first = slot == 0;
			gate_softmax(inner_logits + ((size_t)t * X + g) * Y, 1, Y, inner_prob);
			i1 = gate_argmax(inner_prob, Y, -1);
			/* A second-choice token has no first inner expert: its
			 * "second" is the argmax of all Y, with gate 1 (g1 = 0). */
			i2 = first ? gate_argmax(inner_prob, Y, i1) : i1;
			g1 = first ? inner_prob[i1] : 0;
			g2 = inner_prob[i2];
			den = g1 + g2 + 1e-9;
			if (first) {
				first_count[i1]++;
				for (uint32_t y = 0; y < Y; y++)
					importance_sum[y] += inner_prob[y];
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
		/* mesh-tf averages over the group's buffer of T slots, empty
		 * ones included, then scales by Y². */
		for (uint32_t y = 0; y < Y; y++)
			aux_g += importance_sum[y] / T * ((double)first_count[y] / T);
		inner_aux += aux_g / Y * Y * Y;
	}
	r->aux_loss = outer.aux_loss + inner_aux / X;
	return 0;
}
