/* SPDX-License-Identifier: MIT */
/*
 * capacity: how many tokens an expert takes per batch, and who gets the
 * slots of a full expert.
 */
#include "router.h"

#include <errno.h>
#include <stdlib.h>

uint32_t capacity_of(double capacity_factor, uint32_t k, uint32_t n_tokens, uint32_t n_experts,
		     uint32_t min_capacity)
{
	double c;
	uint32_t cap;

	if (capacity_factor <= 0)
		return UINT32_MAX;
	/* The reference evaluates cf * k * T / E left to right in double and
	 * truncates; the same order here keeps the boundary cases identical. */
	c = capacity_factor * k * n_tokens / n_experts;
	cap = c >= (double)UINT32_MAX ? UINT32_MAX - 1 : (uint32_t)c;
	if (cap < min_capacity)
		cap = min_capacity;
	/* Never 0: a one-token decode batch must not lose every token to rounding. */
	return cap ? cap : 1;
}

struct score_key {
	double score;
	uint32_t token;
};

static int score_key_compare(const void *a, const void *b)
{
	const struct score_key *x = a, *y = b;

	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->token < y->token ? -1 : x->token > y->token;
}

int capacity_priority_order(enum priority_mode mode, const double *top_score,
			    uint32_t n_tokens, struct scratch *s, uint32_t *order)
{
	struct score_key *keys;

	for (uint32_t t = 0; t < n_tokens; t++)
		order[t] = t;
	if (mode != PRIORITY_SCORE || !top_score)
		return 0;
	/* Batch-prioritised routing (V-MoE): the most confident tokens claim
	 * capacity first; ties keep token order so the result is deterministic. */
	keys = scratch_alloc(s, sizeof(*keys) * n_tokens);
	if (!keys)
		return -ENOMEM;
	for (uint32_t t = 0; t < n_tokens; t++)
		keys[t] = (struct score_key){ top_score[t], t };
	qsort(keys, n_tokens, sizeof(*keys), score_key_compare);
	for (uint32_t t = 0; t < n_tokens; t++)
		order[t] = keys[t].token;
	return 0;
}
