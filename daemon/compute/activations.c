/* SPDX-License-Identifier: MIT */
/*
 * activations: float32 nonlinearities. The golden references run in double;
 * erff/tanhf/expf in float, scalar or libmvec's vector ones, stay within
 * 1e-6 relative (plus 1e-6 absolute where GELU's 1 + erf cancels) of them,
 * far inside the 1e-3 output tolerance (test_activations measures it).
 *
 * The row loops exist for AVX-512, for AVX2 (both in activations_simd.c,
 * through libmvec) and as the scalar code below, and the widest one the CPU
 * runs is picked at first use, as matmul_small_m.c picks its kernel: the
 * build targets baseline x86-64, the machines it runs on differ.
 */
#include "activations.h"

#include <stdatomic.h>
#include <stdbool.h>

#include "activations_formulas.h"
#include "activations_simd.h"
#include "cpu_variant.h"

/* Scalar: libm one element at a time; the reference the others are measured against. */
static void activation_apply_generic(enum activation a, float *h1, size_t ld1, const float *h3,
				     size_t ld3, size_t rows, size_t cols)
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
				h[c] = act_gelu_erf(h[c]);
			break;
		case ACT_GELU_TANH:
			for (size_t c = 0; c < cols; c++)
				h[c] = act_gelu_tanh(h[c]);
			break;
		case ACT_SILU_GATED:
			for (size_t c = 0; c < cols; c++)
				h[c] = act_silu(h[c]) * g[c];
			break;
		case ACT_GELU_GATED:
			for (size_t c = 0; c < cols; c++)
				h[c] = act_gelu_erf(h[c]) * g[c];
			break;
		}
	}
}

typedef void (*activation_fn)(enum activation a, float *h1, size_t ld1, const float *h3,
			      size_t ld3, size_t rows, size_t cols);

/* Widest first: the first one the CPU supports is the default. */
static const struct activation_variant {
	struct cpu_variant cpu; /* first: cpu_variant.h */
	activation_fn fn;
} variants[] = {
#if defined(__x86_64__)
	{ { "avx512", cpu_variant_avx512 }, activation_apply_avx512 },
	{ { "avx2", cpu_variant_avx2 }, activation_apply_avx2 },
#endif
	{ { "generic", cpu_variant_baseline }, activation_apply_generic },
};

#define N_VARIANTS (sizeof(variants) / sizeof(variants[0]))

/* Chosen once; a race between first callers is benign: all store the same value. */
static _Atomic(const struct activation_variant *) chosen;

static const struct activation_variant *variant_get(void)
{
	const struct activation_variant *v = atomic_load_explicit(&chosen, memory_order_relaxed);

	if (v)
		return v;
	v = cpu_variant_first(variants, N_VARIANTS, sizeof(variants[0]));
	atomic_store_explicit(&chosen, v, memory_order_relaxed);
	return v;
}

const char *activation_variant(void)
{
	return variant_get()->cpu.name;
}

int activation_variant_force(const char *name)
{
	const void *v;
	int r = cpu_variant_find(variants, N_VARIANTS, sizeof(variants[0]), name, &v);

	if (r == 0)
		atomic_store_explicit(&chosen, v, memory_order_relaxed);
	return r;
}

void activation_apply(enum activation a, float *h1, size_t ld1, const float *h3, size_t ld3,
		      size_t rows, size_t cols)
{
	variant_get()->fn(a, h1, ld1, h3, ld3, rows, cols);
}
