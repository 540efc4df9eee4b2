/* SPDX-License-Identifier: MIT */
/* ffn: the two phases of an FFN expert on a tile; see expert.h. */
#include "expert.h"

#include "compute/activations.h"

/* Row @row of an expert matrix of @f with @cols elements per row. */
static const void *matrix_row(const struct ffn_weights *f, const void *w, size_t row,
			      size_t cols)
{
	return (const uint8_t *)w + row * cols * weight_dtype_size(f->dtype);
}

void expert_ffn_up(const struct ffn_weights *f, enum activation act, enum matmul_kernel kernel,
		   const float *xs, uint32_t rows, uint32_t d_model, uint32_t c0, uint32_t c1,
		   float *h, uint32_t ldh, float *tmp)
{
	const uint32_t n = c1 - c0;
	float *h1 = h + c0;

	matmul_xwt(kernel, xs, d_model, rows, d_model, matrix_row(f, f->w1, c0, d_model), f->dtype,
		   d_model, n, h1, ldh);
	if (f->b1)
		for (uint32_t r = 0; r < rows; r++)
			for (uint32_t c = 0; c < n; c++)
				h1[(size_t)r * ldh + c] += f->b1[c0 + c];
	if (activation_is_gated(act)) {
		matmul_xwt(kernel, xs, d_model, rows, d_model, matrix_row(f, f->w3, c0, d_model),
			   f->dtype, d_model, n, tmp, n);
		activation_apply(act, h1, ldh, tmp, n, rows, n);
	} else {
		activation_apply(act, h1, ldh, NULL, 0, rows, n);
	}
}

void expert_ffn_down(const struct ffn_weights *f, enum matmul_kernel kernel, const float *h,
		     uint32_t ldh, uint32_t rows, uint32_t d_model, uint32_t c0, uint32_t c1,
		     float *ys)
{
	const uint32_t n = c1 - c0;

	matmul_xwt(kernel, h, ldh, rows, f->d_ff, matrix_row(f, f->w2, c0, f->d_ff), f->dtype,
		   f->d_ff, n, ys + c0, d_model);
	if (f->b2)
		for (uint32_t r = 0; r < rows; r++)
			for (uint32_t c = 0; c < n; c++)
				ys[(size_t)r * d_model + c0 + c] += f->b2[c0 + c];
}
