/* SPDX-License-Identifier: MIT */
/* combine: gather into expert order and the fixed-order weighted combine. */
#include "combine.h"

#include <string.h>

void dispatch_gather(const struct dispatch_plan *p, const struct route_result *r,
		     enum scale_mode scale, const float *x, uint32_t d_model, uint32_t row0,
		     uint32_t row1, float *xs)
{
	for (uint32_t row = row0; row < row1; row++) {
		const float *src = x + (size_t)p->row_token[row] * d_model;
		float *dst = xs + (size_t)row * d_model;
		uint32_t slot = p->row_slot[row];

		if (scale == SCALE_INPUT && slot != PLAN_NO_ROW) {
			float g = r->weight[slot];

			for (uint32_t c = 0; c < d_model; c++)
				dst[c] = g * src[c];
		} else {
			memcpy(dst, src, sizeof(float) * d_model);
		}
	}
}

void dispatch_combine(const struct dispatch_plan *p, const struct route_result *r,
		      enum scale_mode scale, enum drop_policy drop, const float *x,
		      const float *ys, const float *shared_gate, uint32_t d_model, uint32_t t0,
		      uint32_t t1, float *y)
{
	const uint32_t k = p->k;

	for (uint32_t t = t0; t < t1; t++) {
		float *out = y + (size_t)t * d_model;
		bool any = false;

		memset(out, 0, sizeof(float) * d_model);
		for (uint32_t j = 0; j < k; j++) {
			size_t slot = (size_t)t * k + j;
			uint32_t row = p->slot_row[slot];
			const float *src;
			float g;

			if (row == PLAN_NO_ROW)
				continue;
			any = true;
			src = ys + (size_t)row * d_model;
			g = scale == SCALE_OUTPUT ? r->weight[slot] : 1.0f;
			for (uint32_t c = 0; c < d_model; c++)
				out[c] += g * src[c];
		}
		if (!any && drop == DROP_PASSTHROUGH) {
			const float *in = x + (size_t)t * d_model;
			float f = r->passthrough_scale[t];

			for (uint32_t c = 0; c < d_model; c++)
				out[c] = in[c] * f;
		}
		if (p->has_shared) {
			const float *src =
				ys + ((size_t)p->bin_start[p->n_bins - 1] + t) * d_model;
			float g = shared_gate ? shared_gate[t] : 1.0f;

			for (uint32_t c = 0; c < d_model; c++)
				out[c] += g * src[c];
		}
	}
}
