/* SPDX-License-Identifier: MIT */
/*
 * activations: the FFN nonlinearities, in place on float32 rows.
 * Plain: h = act(h1). Gated: h = act(h1) ⊙ h3 (SwiGLU and GeGLU).
 */
#pragma once

#include <stddef.h>

#include "router/router_config.h"

/* True for SiLU- and GELU-gated activations (an expert with w3). */
static inline int activation_is_gated(enum activation a)
{
	return a == ACT_SILU_GATED || a == ACT_GELU_GATED;
}

/*
 * h1[rows][cols] (row stride ld1) becomes act(h1), or act(h1) ⊙ h3 for gated
 * activations (h3 with row stride ld3; NULL for plain ones). NaN in h1 stays
 * NaN. Runs the variant activation_variant() names.
 */
void activation_apply(enum activation a, float *h1, size_t ld1, const float *h3, size_t ld3,
		      size_t rows, size_t cols);

/* Which instantiation of activation_apply() runs ("avx512", "avx2", "generic"). */
const char *activation_variant(void);
/*
 * Use the named instantiation from now on (tests and benchmarks compare
 * them). -EINVAL for an unknown name, -EOPNOTSUPP when the CPU lacks it.
 * Not for use while other threads apply activations.
 */
int activation_variant_force(const char *name);
