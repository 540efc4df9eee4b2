/* SPDX-License-Identifier: MIT */
/*
 * activations_simd_body.h: activation_apply's row loops, instantiated once
 * per vector width by activations_simd.c. Define before including:
 *   ACT_NAME    the function's name
 *   ACT_TARGET  its target attribute
 * Both are undefined again at the end, ready for the next instantiation.
 *
 * `#pragma omp simd` (with -fopenmp-simd: no OpenMP runtime) makes GCC
 * vectorise each loop at -O2 as well as -O3 and, with the libmvec
 * declarations of activations_simd.c in sight, call the vector expf/erff/
 * tanhf of the instantiation's width; the columns left over (cols not a
 * multiple of the width) go through the narrower clone or the scalar libm.
 */

ACT_TARGET void ACT_NAME(enum activation a, float *h1, size_t ld1, const float *h3, size_t ld3,
			 size_t rows, size_t cols)
{
	for (size_t r = 0; r < rows; r++) {
		float *h = h1 + r * ld1;
		const float *g = h3 ? h3 + r * ld3 : NULL;

		switch (a) {
		case ACT_RELU:
			/* `< 0`, not `> 0`: NaN stays NaN (see activations.c) */
#pragma omp simd
			for (size_t c = 0; c < cols; c++)
				h[c] = h[c] < 0 ? 0 : h[c];
			break;
		case ACT_GELU:
#pragma omp simd
			for (size_t c = 0; c < cols; c++)
				h[c] = act_gelu_erf(h[c]);
			break;
		case ACT_GELU_TANH:
#pragma omp simd
			for (size_t c = 0; c < cols; c++)
				h[c] = act_gelu_tanh(h[c]);
			break;
		case ACT_SILU_GATED:
#pragma omp simd
			for (size_t c = 0; c < cols; c++)
				h[c] = act_silu(h[c]) * g[c];
			break;
		case ACT_GELU_GATED:
#pragma omp simd
			for (size_t c = 0; c < cols; c++)
				h[c] = act_gelu_erf(h[c]) * g[c];
			break;
		}
	}
}

#undef ACT_NAME
#undef ACT_TARGET
