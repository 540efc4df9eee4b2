/* SPDX-License-Identifier: MIT */
/*
 * stats: the routers' statistics (aux loss, router z-loss, dropped slots)
 * over a range of tokens, from the per-token values each family keeps in its
 * route_result. The whole batch is one range among others, so a client's
 * tokens in a merged run get their statistics from the very code, order of
 * summation and values that their batch alone gets (see router.h). Each
 * formula below is the family's reference formula with T the range's
 * length; the families' files say where each one comes from.
 */
#include "router.h"

#include <errno.h>
#include <string.h>

/* Counts and sums over the experts (or groups) of one range. */
struct stats_work {
	uint32_t *count;
	double *sum;
};

/* switch: E · Σ_e f_e · P_e, f from the top-1 choices, P the mean probability. */
static double aux_switch(const struct route_result *r, uint32_t t0, uint32_t n,
			 struct stats_work *w)
{
	const uint32_t E = r->n_prob;
	double aux = 0;

	for (uint32_t t = t0; t < t0 + n; t++) {
		const double *p = r->prob + (size_t)t * E;

		w->count[r->choice[t]]++;
		for (uint32_t e = 0; e < E; e++)
			w->sum[e] += p[e];
	}
	for (uint32_t e = 0; e < E; e++)
		aux += (double)w->count[e] / n * (w->sum[e] / n);
	return E * aux;
}

/*
 * topk: E/(T·k) · ⟨tokens_per_expert, mean_t P⟩, P the softmax
 * probabilities or the sigmoid scores normalised over the experts.
 */
static double aux_topk(const struct router_config *cfg, const struct route_result *r,
		       uint32_t t0, uint32_t n, struct stats_work *w)
{
	const uint32_t E = r->n_prob, k = r->n_choice;
	const bool softmax = cfg->score != SCORE_SIGMOID;
	double aux = 0;

	for (uint32_t t = t0; t < t0 + n; t++) {
		const double *p = r->prob + (size_t)t * E;
		double norm = 0;

		for (uint32_t j = 0; j < k; j++)
			w->count[r->choice[(size_t)t * k + j]]++;
		for (uint32_t e = 0; e < E; e++)
			norm += p[e];
		for (uint32_t e = 0; e < E; e++)
			w->sum[e] += softmax ? p[e] : p[e] / norm;
	}
	for (uint32_t e = 0; e < E; e++)
		aux += (double)w->count[e] * (w->sum[e] / n);
	return (double)E / ((double)n * k) * aux;
}

/*
 * gshard: mean_e(mean_t(p) · mean_t(first-choice mask)), times E² for
 * mesh-tf. Also the outer gate of hierarchical (always mesh-tf).
 */
static double aux_gshard(bool fairscale, const struct route_result *r, uint32_t t0, uint32_t n,
			 struct stats_work *w)
{
	const uint32_t E = r->n_prob;
	double aux = 0;

	for (uint32_t t = t0; t < t0 + n; t++) {
		const double *p = r->prob + (size_t)t * E;

		w->count[r->choice[(size_t)t * r->n_choice]]++;
		for (uint32_t e = 0; e < E; e++)
			w->sum[e] += p[e];
	}
	for (uint32_t e = 0; e < E; e++)
		aux += w->sum[e] / n * ((double)w->count[e] / n);
	aux /= E;
	return fairscale ? aux : aux * E * E;
}

/*
 * hierarchical: the outer gate's aux plus the mean over the X groups of
 * each group's inner aux over the tokens whose first group it is. mesh-tf
 * averages over the group's buffer of T slots, empty ones included, then
 * scales by Y². @w holds Y counts and sums.
 */
static double aux_hierarchical(const struct router_config *cfg, const struct route_result *r,
			       double outer_aux, uint32_t t0, uint32_t n, struct stats_work *w)
{
	const uint32_t X = cfg->groups, Y = cfg->experts_per_group;
	double inner_aux = 0;

	for (uint32_t g = 0; g < X; g++) {
		double aux_g = 0;

		memset(w->sum, 0, sizeof(double) * Y);
		memset(w->count, 0, sizeof(uint32_t) * Y);
		for (uint32_t t = t0; t < t0 + n; t++) {
			const double *ip = r->inner_prob + (size_t)t * Y;

			if (r->choice[(size_t)t * r->n_choice] != g)
				continue;
			w->count[r->inner_choice[t]]++;
			for (uint32_t y = 0; y < Y; y++)
				w->sum[y] += ip[y];
		}
		for (uint32_t y = 0; y < Y; y++)
			aux_g += w->sum[y] / n * ((double)w->count[y] / n);
		inner_aux += aux_g / Y * Y * Y;
	}
	return outer_aux + inner_aux / X;
}

static int stats_work_alloc(uint32_t n, struct scratch *s, struct stats_work *w)
{
	w->count = scratch_calloc(s, n, sizeof(uint32_t));
	w->sum = scratch_calloc(s, n, sizeof(double));
	return w->count && w->sum ? 0 : -ENOMEM;
}

int router_stats(const struct router_config *cfg, const struct route_result *r, uint32_t t0,
		 uint32_t t1, struct scratch *s, struct route_stats *ret)
{
	struct route_stats st = { 0 };
	struct stats_work w = { 0 };
	const uint32_t n = t1 - t0;
	int rc;

	if (t0 >= t1 || t1 > r->n_tokens)
		return -EINVAL;
	for (uint32_t t = t0; t < t1; t++)
		st.n_dropped += r->token_dropped[t];
	if (r->logits) {
		st.z_loss = gate_z_loss(r->logits + (size_t)t0 * r->n_experts, n, r->n_experts);
		st.has_z_loss = true;
	}
	if (r->prob) {
		rc = stats_work_alloc(r->n_prob, s, &w);
		if (rc < 0)
			return rc;
	}
	switch (cfg->kind) {
	case ROUTER_SWITCH:
		st.aux_loss = aux_switch(r, t0, n, &w);
		break;
	case ROUTER_TOPK:
		st.aux_loss = aux_topk(cfg, r, t0, n, &w);
		break;
	case ROUTER_GSHARD:
		st.aux_loss = aux_gshard(cfg->top2_variant == TOP2_FAIRSCALE, r, t0, n, &w);
		break;
	case ROUTER_HIERARCHICAL:
		st.aux_loss = aux_gshard(false, r, t0, n, &w);
		rc = stats_work_alloc(cfg->experts_per_group, s, &w);
		if (rc < 0)
			return rc;
		st.aux_loss = aux_hierarchical(cfg, r, st.aux_loss, t0, n, &w);
		break;
	case ROUTER_BASE:
	case ROUTER_GIVEN:
		/* BASE balances by assignment, not by a loss; a given routing is not ours */
		st.aux_loss = 0;
		break;
	}
	*ret = st;
	return 0;
}
