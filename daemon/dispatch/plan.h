/* SPDX-License-Identifier: MIT */
/*
 * plan: the dispatch plan of one batch, as MegaBlocks builds it. The (token,
 * slot) pairs that kept an expert are sorted by expert with a counting sort
 * (histogram, bins by prefix sum, stable placement in (token, slot) order), so
 * each expert's rows are contiguous and can be gathered and multiplied in one
 * GEMM per weight matrix. A shared expert (every token) is one more bin after
 * the routed experts.
 *
 * Layout of rows: bin e holds rows [bin_start[e], bin_start[e+1]).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "router/router.h"
#include "util/scratch.h"

#define PLAN_NO_ROW UINT32_MAX

struct dispatch_plan {
	uint32_t n_tokens, k;
	uint32_t n_bins;     /* routed experts, plus 1 with a shared expert */
	uint32_t *bin_start; /* [n_bins + 1] */
	uint32_t n_rows;
	uint32_t *row_token; /* [n_rows]: the token of each sorted row */
	uint32_t *row_slot;  /* [n_rows]: its flattened slot t*k+j, PLAN_NO_ROW for shared */
	uint32_t *slot_row;  /* [T*k]: the row of each slot, PLAN_NO_ROW if dropped */
	bool has_shared;     /* bin n_bins-1 is the shared expert, row = its start + t */
};

/* Build the plan for @r; buffers from @s. 0 or -ENOMEM. */
int dispatch_plan_build(const struct route_result *r, bool with_shared, struct scratch *s,
			struct dispatch_plan *ret);
