/* SPDX-License-Identifier: MIT */
/*
 * topk: the routers of today's models. Mixtral (softmax, top-2, renormalised),
 * Qwen-MoE (softmax, top-k, renormalised or not), DeepSeek-V3 (sigmoid
 * affinities, renormalised) and MegaBlocks (dropless, or capacity-limited with
 * priority in flattened (token, slot) order, as after its stable sort).
 * aux = E/(T·k) · ⟨tokens_per_expert, mean_t P⟩ with P the softmax
 * probabilities, or the sigmoid affinities normalised over experts
 * (DeepSeek-V3's balance loss with α = 1); stats.c computes it.
 *
 * DeepSeek's extras: a selection bias (V3's e_score_correction_bias) added
 * to the scores for choosing experts but not for weighting them, a group
 * limit (the experts form equal groups; a token first keeps its best
 * topk_groups groups, scored by their best expert (V2) or the sum of their
 * two best (V3), and chooses among those only), and a factor on the routed
 * weights (routed_scaling_factor). Experts outside the kept groups are
 * excluded outright; the reference code masks their score to 0, which is
 * the same whenever the kept experts' scores are positive (sigmoid scores,
 * softmax probabilities).
 */
#include "router.h"

#include <errno.h>
#include <math.h>

/*
 * The k largest of v[n] in descending order (the lower index first on a
 * tie), by insertion into the sorted prefix idx[0..found): O(n·k) at worst,
 * O(n) when few values beat the k-th, as with most tokens' scores.
 */
static void select_top_k(const double *v, uint32_t n, uint32_t k, uint32_t *idx)
{
	uint32_t found = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t pos;

		/* strictly greater: an equal value found later ranks after */
		if (found == k && !(v[i] > v[idx[k - 1]]))
			continue;
		pos = found < k ? found++ : k - 1;
		while (pos > 0 && v[i] > v[idx[pos - 1]]) {
			idx[pos] = idx[pos - 1];
			pos--;
		}
		idx[pos] = i;
	}
}

/* One group's score from the selection scores of its @n experts. */
static double group_score_of(enum group_score how, const double *sel, uint32_t n)
{
	double best = -INFINITY, second = -INFINITY;

	for (uint32_t i = 0; i < n; i++) {
		if (sel[i] > best) {
			second = best;
			best = sel[i];
		} else if (sel[i] > second) {
			second = sel[i];
		}
	}
	return how == GROUP_SCORE_MAX ? best : best + second;
}

/*
 * Selection scores of one token: score + bias, with the experts outside the
 * token's best groups at -inf. @gscore and @gidx hold expert_groups entries.
 */
static void selection_scores(const struct router_config *cfg, const double *p,
			     const float *bias, uint32_t n_experts, double *sel, double *gscore,
			     uint32_t *gidx)
{
	const uint32_t G = cfg->expert_groups;
	uint32_t per;

	for (uint32_t e = 0; e < n_experts; e++)
		sel[e] = p[e] + (bias ? bias[e] : 0.0);
	if (G == 0)
		return;
	per = n_experts / G;
	for (uint32_t g = 0; g < G; g++)
		gscore[g] = group_score_of(cfg->group_score, sel + (size_t)g * per, per);
	select_top_k(gscore, G, cfg->topk_groups, gidx);
	for (uint32_t g = 0; g < G; g++) {
		bool kept = false;

		for (uint32_t j = 0; j < cfg->topk_groups && !kept; j++)
			kept = gidx[j] == g;
		if (!kept)
			for (uint32_t e = g * per; e < (g + 1) * per; e++)
				sel[e] = -INFINITY;
	}
}

int route_topk(const struct router_config *cfg, const float *logits, const float *selection_bias,
	       uint32_t n_tokens, uint32_t n_experts, struct scratch *s, struct route_result *r)
{
	const bool plain = !selection_bias && cfg->expert_groups == 0;
	double *sel = plain ? NULL : scratch_alloc(s, sizeof(double) * n_experts);
	double *gscore = scratch_alloc(s, sizeof(double) * (cfg->expert_groups + 1));
	uint32_t *gidx = scratch_alloc(s, sizeof(uint32_t) * (cfg->topk_groups + 1));
	const uint32_t k = cfg->top_k;
	double *score = scratch_alloc(s, sizeof(double) * n_tokens * n_experts);
	double *softmax = score;
	uint32_t *choice = scratch_alloc(s, sizeof(uint32_t) * n_tokens * k);
	double *top = scratch_alloc(s, sizeof(double) * n_tokens);
	uint32_t *order = scratch_alloc(s, sizeof(uint32_t) * n_tokens);
	uint32_t *seen = scratch_calloc(s, n_experts, sizeof(uint32_t));
	uint32_t cap;
	int ret;

	if (!score || !choice || !top || !order || !seen || (!plain && !sel) || !gscore || !gidx)
		return -ENOMEM;
	if (cfg->score == SCORE_SIGMOID) {
		gate_sigmoid(logits, n_tokens, n_experts, score);
		softmax = NULL;
	} else {
		gate_softmax(logits, n_tokens, n_experts, score);
	}

	for (uint32_t t = 0; t < n_tokens; t++) {
		const double *p = score + (size_t)t * n_experts;
		uint32_t *c = choice + (size_t)t * k;
		double sum = 0;

		if (plain) {
			select_top_k(p, n_experts, k, c);
		} else {
			selection_scores(cfg, p, selection_bias, n_experts, sel, gscore, gidx);
			select_top_k(sel, n_experts, k, c);
		}
		/* weights from the scores themselves, never from the biased ones */
		for (uint32_t j = 0; j < k; j++)
			sum += p[c[j]];
		for (uint32_t j = 0; j < k; j++) {
			double w = cfg->normalize ? p[c[j]] / sum : p[c[j]];

			r->weight[(size_t)t * k + j] = (float)(w * cfg->routed_scaling);
			r->tokens_per_expert[c[j]]++;
		}
		top[t] = p[c[0]];
		/* passthrough scales by the top-1 softmax probability (config
		 * validation refuses passthrough with sigmoid scores unless unscaled) */
		r->passthrough_scale[t] =
			cfg->scale == SCALE_NONE || !softmax ? 1.0f : (float)p[c[0]];
	}
	r->prob = score;
	r->n_prob = n_experts;
	r->choice = choice;
	r->n_choice = k;

	cap = capacity_of(cfg->capacity_factor, k, n_tokens, n_experts, cfg->min_capacity);
	ret = capacity_priority_order(cfg->priority, top, n_tokens, s, order);
	if (ret < 0)
		return ret;
	/*
	 * Who keeps a full expert's slots. priority=token: flattened (token,
	 * slot) order, each token's k choices in turn (MegaBlocks after its
	 * stable sort). priority=score: V-MoE's batch-prioritized routing
	 * (vmoe/moe.py): tokens by descending top-1 score, and the k axis
	 * leads, so every first choice claims capacity before any second
	 * choice ("top-1 choices have priority over top-2 choices"), as the
	 * gshard router does.
	 */
	const bool k_leads = cfg->priority == PRIORITY_SCORE;
	const uint32_t n_outer = k_leads ? k : n_tokens, n_inner = k_leads ? n_tokens : k;

	for (uint32_t a = 0; a < n_outer; a++)
		for (uint32_t b = 0; b < n_inner; b++) {
			uint32_t t = order[k_leads ? b : a], j = k_leads ? a : b;
			size_t slot = (size_t)t * k + j;
			uint32_t e = choice[slot];

			if (seen[e]++ < cap) {
				r->expert[slot] = (int32_t)e;
			} else {
				r->weight[slot] = 0;
				r->token_dropped[t]++;
			}
		}
	return 0;
}
