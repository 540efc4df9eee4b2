/* SPDX-License-Identifier: MIT */
/*
 * base_expert: a BASE layers expert (fairseq BaseSublayer stack) on a block
 * of rows, and the mix with the input that BASE applies around it.
 * LayerNorm statistics are taken in double: the variance of a row is a
 * difference of large sums, where float32 loses digits the golden tolerance
 * would notice.
 */
#include "expert.h"

#include <math.h>
#include <string.h>

static void layer_norm(const float *x, uint32_t rows, uint32_t d, const float *w,
		       const float *b, float *out)
{
	for (uint32_t r = 0; r < rows; r++) {
		const float *in = x + (size_t)r * d;
		float *o = out + (size_t)r * d;
		double mean = 0, var = 0, inv;

		for (uint32_t c = 0; c < d; c++)
			mean += in[c];
		mean /= d;
		for (uint32_t c = 0; c < d; c++)
			var += (in[c] - mean) * (in[c] - mean);
		var /= d; /* biased, as torch.nn.functional.layer_norm */
		inv = 1.0 / sqrt(var + 1e-5);
		for (uint32_t c = 0; c < d; c++)
			o[c] = (float)((in[c] - mean) * inv) * w[c] + b[c];
	}
}

void expert_base(const struct moe_expert *e, uint32_t n_sublayers, uint32_t d_model,
		 uint32_t d_ff, const float *xs, const float *mix, uint32_t rows, float *ys,
		 float *ln, float *h)
{
	memcpy(ys, xs, sizeof(float) * rows * d_model);
	for (uint32_t s = 0; s < n_sublayers; s++) {
		const struct base_sublayer *sl = &e->sublayers[s];

		layer_norm(ys, rows, d_model, sl->norm_w, sl->norm_b, ln);
		matmul_xwt(MATMUL_AUTO, ln, d_model, rows, d_model, sl->ff1_w, WEIGHT_F32, d_model, d_ff, h,
			   d_ff);
		for (uint32_t r = 0; r < rows; r++)
			for (uint32_t c = 0; c < d_ff; c++) {
				float v = h[(size_t)r * d_ff + c] + sl->ff1_b[c];

				h[(size_t)r * d_ff + c] = v < 0 ? 0 : v; /* NaN stays NaN */
			}
		/* ln is free again: reuse it for ff2's output before the residual add */
		matmul_xwt(MATMUL_AUTO, h, d_ff, rows, d_ff, sl->ff2_w, WEIGHT_F32, d_ff, d_model, ln,
			   d_model);
		for (size_t i = 0; i < (size_t)rows * d_model; i++)
			ys[i] += ln[i] + sl->ff2_b[i % d_model];
	}
	for (uint32_t r = 0; r < rows; r++) {
		float a = mix[r];

		for (uint32_t c = 0; c < d_model; c++) {
			size_t i = (size_t)r * d_model + c;

			ys[i] = a * ys[i] + (1.0f - a) * xs[i];
		}
	}
}
