/* SPDX-License-Identifier: MIT */
/*
 * activations: float32 nonlinearities. The golden references run in double;
 * erff/tanhf/expf in float stay within 1e-6 relative of them, far inside the
 * 1e-3 output tolerance.
 */
#include "activations.h"

#include <math.h>

static inline float gelu_erf(float x)
{
	return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
}

static inline float gelu_tanh(float x)
{
	const float k = 0.7978845608028654f; /* sqrt(2/pi) */

	return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static inline float silu(float x)
{
	return x / (1.0f + expf(-x));
}

void activation_apply(enum activation a, float *h1, size_t ld1, const float *h3, size_t ld3,
		      size_t rows, size_t cols)
{
	for (size_t r = 0; r < rows; r++) {
		float *h = h1 + r * ld1;
		const float *g = h3 ? h3 + r * ld3 : NULL;

		switch (a) {
		case ACT_RELU:
			/* `< 0`, not `> 0`: NaN must stay NaN (as in torch.relu), so
			 * that an overflow inside an expert reaches the output check */
			for (size_t c = 0; c < cols; c++)
				h[c] = h[c] < 0 ? 0 : h[c];
			break;
		case ACT_GELU:
			for (size_t c = 0; c < cols; c++)
				h[c] = gelu_erf(h[c]);
			break;
		case ACT_GELU_TANH:
			for (size_t c = 0; c < cols; c++)
				h[c] = gelu_tanh(h[c]);
			break;
		case ACT_SILU_GATED:
			for (size_t c = 0; c < cols; c++)
				h[c] = silu(h[c]) * g[c];
			break;
		case ACT_GELU_GATED:
			for (size_t c = 0; c < cols; c++)
				h[c] = gelu_erf(h[c]) * g[c];
			break;
		}
	}
}
