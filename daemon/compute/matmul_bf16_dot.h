/* SPDX-License-Identifier: MIT */
/*
 * matmul_bf16_dot: y = x·Wᵀ for BF16 weights by AVX512_BF16's dot product
 * (vdpbf16ps), an opt-in for the m that the small-m kernel serves (setting
 * bf16_dot). Each instruction multiplies 32 BF16 pairs into 16 float32
 * sums, where the widening kernel (matmul_small_m.c) needs a shift per 16
 * weights and an FMA per 16 products: about half the instructions.
 *
 * The price is the activations: vdpbf16ps takes both operands in BF16, so x
 * is rounded to BF16 (to nearest even) once per call. The result is then
 * exactly "BF16 activations x BF16 weights, float32 accumulation": every
 * product is exact in float32, only the sums round. Against float32
 * activations on the same weights that is a relative error of the order of
 * BF16's unit roundoff (2^-8) over sqrt(k) of random signs: the measured
 * figures and the bound the tests hold it to are in
 * tests/unit/test_bf16_dot.c and README.md.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether this CPU runs the kernel (AVX512_BF16: cpu_variant_avx512_bf16()). */
bool matmul_bf16_dot_supported(void);

/*
 * From now on, matmul_xwt() multiplies BF16 weights with this kernel where it
 * would use the small-m kernel (@on), or with the widening kernel as before
 * (!@on; the default). 0, or -EOPNOTSUPP when @on and the CPU lacks
 * AVX512_BF16 (nothing changes then). Not while other threads run matmuls:
 * set once at start, as the bounds are.
 */
int matmul_bf16_dot_enable(bool on);

/* Whether matmul_xwt() uses the kernel for BF16 weights. */
bool matmul_bf16_dot_enabled(void);

/*
 * y (row stride @ldy) = bf16(x) (row stride @ldx, @m rows of @k) · Wᵀ, W
 * @n rows of @k BF16 values with row stride @ldw; any m, k, n >= 1 and
 * pointers of any alignment. Only where matmul_bf16_dot_supported(). The
 * caller's thread runs it, with a buffer of its own for the rounded x
 * (thread_buf.h: grown at a thread's first calls, then reused); without
 * memory for it the widening kernel computes the product (float32
 * activations, the more exact result). Exposed for the tests and the
 * kernel benchmark; the engine goes through matmul_xwt().
 */
void matmul_bf16_dot(const float *x, size_t ldx, uint32_t m, uint32_t k, const uint16_t *w,
		     size_t ldw, uint32_t n, float *y, size_t ldy);
