/* SPDX-License-Identifier: MIT */
/*
 * combine: moving rows in and out of expert order.
 *
 * gather copies each token's row to its sorted position (scaled by its gate
 * for scale=input); combine sums each token's expert outputs back, in slot
 * order j = 0..k-1 then the shared expert, so a token's result never depends
 * on how the rows were split over threads. Both work on a range, so the pool
 * can split them; ranges never share an output row.
 */
#pragma once

#include <stdint.h>

#include "dispatch/plan.h"
#include "router/router.h"

/* xs[row] = x[token(row)] (× gate for SCALE_INPUT), rows [row0, row1). */
void dispatch_gather(const struct dispatch_plan *p, const struct route_result *r,
		     enum scale_mode scale, const float *x, uint32_t d_model, uint32_t row0,
		     uint32_t row1, float *xs);

/*
 * y[t] for tokens [t0, t1): Σ_j g_j · ys[row(t, j)] (g_j = 1 unless
 * SCALE_OUTPUT), x[t]·passthrough_scale[t] for a token that lost every slot
 * under DROP_PASSTHROUGH, plus shared_gate[t] · ys[shared row of t] when the
 * plan has a shared expert (shared_gate NULL: weight 1).
 */
void dispatch_combine(const struct dispatch_plan *p, const struct route_result *r,
		      enum scale_mode scale, enum drop_policy drop, const float *x,
		      const float *ys, const float *shared_gate, uint32_t d_model, uint32_t t0,
		      uint32_t t1, float *y);
