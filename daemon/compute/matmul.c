/* SPDX-License-Identifier: MIT */
/*
 * matmul: kernel choice for an expert's GEMM tile, and the small-m kernel.
 *
 * The small-m kernel: each block of 4 weight rows is read from memory once and
 * kept in L1/L2 while every pair of token rows is multiplied with it, so the
 * weights stream once per tile no matter how many tokens (up to
 * MATMUL_SMALL_M_MAX) the expert received. 4 weight rows x 2 tokens = 8
 * accumulators plus 6 loaded vectors fit the 16 vector registers of AVX2.
 * It is compiled for AVX-512, AVX2+FMA and baseline x86-64, and the loader
 * picks the best clone for the CPU at run time (target_clones), as OpenBLAS
 * picks its own kernels.
 */
#include "matmul.h"

#include <cblas.h>
#include <string.h>

/* Every function taking or returning v8f is static and inlined into the
 * clones, so the vector ABI difference GCC warns about never crosses a call. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float v8f __attribute__((vector_size(32)));

static inline v8f load8(const float *p)
{
	v8f v;

	memcpy(&v, p, sizeof(v)); /* rows need not be 32-byte aligned */
	return v;
}

static inline float hsum8(v8f v)
{
	return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define SMALLM_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define SMALLM_CLONES
#endif

/* R weight rows (1..4) x C token rows (1..2): fully unrolled by the compiler. */
static inline __attribute__((always_inline)) void
block_rc(const float *x, size_t ldx, uint32_t k, const float *w, size_t ldw, float *y,
	 size_t ldy, int R, int C)
{
	v8f acc[4][2] = { { { 0 } } };
	uint32_t i = 0;

	for (; i + 8 <= k; i += 8) {
		v8f wv[4], xv[2];

		for (int r = 0; r < R; r++)
			wv[r] = load8(w + r * ldw + i);
		for (int c = 0; c < C; c++)
			xv[c] = load8(x + c * ldx + i);
		for (int r = 0; r < R; r++)
			for (int c = 0; c < C; c++)
				acc[r][c] += wv[r] * xv[c];
	}
	for (int r = 0; r < R; r++) {
		for (int c = 0; c < C; c++) {
			float s = hsum8(acc[r][c]);

			for (uint32_t j = i; j < k; j++)
				s += w[r * ldw + j] * x[c * ldx + j];
			y[c * ldy + r] = s;
		}
	}
}

SMALLM_CLONES
void matmul_small_m(const float *x, size_t ldx, uint32_t m, uint32_t k, const float *w,
		    size_t ldw, uint32_t n, float *y, size_t ldy)
{
	uint32_t r0 = 0;

	for (; r0 + 4 <= n; r0 += 4) {
		uint32_t c0 = 0;

		for (; c0 + 2 <= m; c0 += 2)
			block_rc(x + c0 * ldx, ldx, k, w + r0 * ldw, ldw, y + c0 * ldy + r0, ldy,
				 4, 2);
		if (c0 < m)
			block_rc(x + c0 * ldx, ldx, k, w + r0 * ldw, ldw, y + c0 * ldy + r0, ldy,
				 4, 1);
	}
	for (; r0 < n; r0++) {
		uint32_t c0 = 0;

		for (; c0 + 2 <= m; c0 += 2)
			block_rc(x + c0 * ldx, ldx, k, w + r0 * ldw, ldw, y + c0 * ldy + r0, ldy,
				 1, 2);
		if (c0 < m)
			block_rc(x + c0 * ldx, ldx, k, w + r0 * ldw, ldw, y + c0 * ldy + r0, ldy,
				 1, 1);
	}
}

void matmul_xwt(enum matmul_kernel kernel, const float *x, size_t ldx, uint32_t m, uint32_t k,
		const float *w, size_t ldw, uint32_t n, float *y, size_t ldy)
{
	if (m == 0 || n == 0)
		return;
	if (kernel == MATMUL_AUTO)
		kernel = m == 1 ? MATMUL_SGEMV
			       : m <= MATMUL_SMALL_M_MAX ? MATMUL_SMALLM : MATMUL_SGEMM;
	switch (kernel) {
	case MATMUL_SGEMV:
		for (uint32_t r = 0; r < m; r++)
			cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)k, 1.0f, w, (int)ldw,
				    x + r * ldx, 1, 0.0f, y + r * ldy, 1);
		break;
	case MATMUL_SMALLM:
		matmul_small_m(x, ldx, m, k, w, ldw, n, y, ldy);
		break;
	case MATMUL_AUTO:
	case MATMUL_SGEMM:
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f,
			    x, (int)ldx, w, (int)ldw, 0.0f, y, (int)ldy);
		break;
	}
}
