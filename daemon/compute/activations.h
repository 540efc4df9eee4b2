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
 * activations (h3 with row stride ld3; NULL for plain ones).
 */
void activation_apply(enum activation a, float *h1, size_t ld1, const float *h3, size_t ld3,
		      size_t rows, size_t cols);
