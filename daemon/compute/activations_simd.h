/* SPDX-License-Identifier: MIT */
/*
 * activations_simd.h: the vector instantiations of activation_apply()
 * (activations_simd.c), for activations.c's table of variants only. Each
 * takes activation_apply()'s arguments and may run only on a CPU with its
 * features (AVX-512F, or AVX2; both with FMA): activations.c checks.
 */
#pragma once

#include <stddef.h>

#include "router/router_config.h"

#if defined(__x86_64__)
void activation_apply_avx512(enum activation a, float *h1, size_t ld1, const float *h3,
			     size_t ld3, size_t rows, size_t cols);
void activation_apply_avx2(enum activation a, float *h1, size_t ld1, const float *h3,
			   size_t ld3, size_t rows, size_t cols);
#endif
