/* SPDX-License-Identifier: MIT */
/*
 * activations_formulas.h: the float formulas of the smooth activations, one
 * copy shared by the scalar path (activations.c) and the vector ones
 * (activations_simd.c), so that every variant computes the same expression
 * and only the libm behind expf/erff/tanhf differs.
 */
#pragma once

#include <math.h>

static inline float act_gelu_erf(float x)
{
	return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
}

static inline float act_gelu_tanh(float x)
{
	const float k = 0.7978845608028654f; /* sqrt(2/pi) */

	return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

/* x / (1 + e^-x): -0 for x below about -88 (e^-x is inf), NaN for x = -inf */
static inline float act_silu(float x)
{
	return x / (1.0f + expf(-x));
}
