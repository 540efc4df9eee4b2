/* SPDX-License-Identifier: MIT */
/* plan: counting sort of (token, slot) pairs by expert; see plan.h. */
#include "plan.h"

#include <errno.h>
#include <string.h>

int dispatch_plan_build(const struct route_result *r, bool with_shared, struct scratch *s,
			struct dispatch_plan *ret)
{
	const uint32_t T = r->n_tokens, k = r->k, E = r->n_experts;
	struct dispatch_plan p = { .n_tokens = T, .k = k, .n_bins = E + (with_shared ? 1 : 0),
				   .has_shared = with_shared };
	uint32_t *fill;

	p.bin_start = scratch_calloc(s, (size_t)p.n_bins + 1, sizeof(uint32_t));
	p.slot_row = scratch_alloc(s, sizeof(uint32_t) * T * k);
	fill = scratch_alloc(s, sizeof(uint32_t) * p.n_bins);
	if (!p.bin_start || !p.slot_row || !fill)
		return -ENOMEM;

	/* histogram: bin_start[e + 1] counts expert e's rows */
	for (size_t i = 0; i < (size_t)T * k; i++)
		if (r->expert[i] >= 0)
			p.bin_start[r->expert[i] + 1]++;
	if (with_shared)
		p.bin_start[E + 1] = T;
	/* prefix sum: bin_start[e] is where expert e's rows begin */
	for (uint32_t e = 0; e < p.n_bins; e++)
		p.bin_start[e + 1] += p.bin_start[e];
	p.n_rows = p.bin_start[p.n_bins];

	p.row_token = scratch_alloc(s, sizeof(uint32_t) * p.n_rows);
	p.row_slot = scratch_alloc(s, sizeof(uint32_t) * p.n_rows);
	if (!p.row_token || !p.row_slot)
		return -ENOMEM;
	memcpy(fill, p.bin_start, sizeof(uint32_t) * p.n_bins);
	/* stable placement: within a bin, rows keep (token, slot) order, which
	 * is also the order in which capacity was granted */
	for (size_t i = 0; i < (size_t)T * k; i++) {
		int32_t e = r->expert[i];
		uint32_t row;

		if (e < 0) {
			p.slot_row[i] = PLAN_NO_ROW;
			continue;
		}
		row = fill[e]++;
		p.row_token[row] = (uint32_t)(i / k);
		p.row_slot[row] = (uint32_t)i;
		p.slot_row[i] = row;
	}
	if (with_shared) {
		for (uint32_t t = 0; t < T; t++) {
			p.row_token[p.bin_start[E] + t] = t;
			p.row_slot[p.bin_start[E] + t] = PLAN_NO_ROW;
		}
	}
	*ret = p;
	return 0;
}
