/* SPDX-License-Identifier: MIT */
/*
 * matmul_bf16_dot: BF16 weights times BF16-rounded activations by
 * vdpbf16ps, float32 accumulation; see matmul_bf16_dot.h for what it costs
 * in accuracy. The structure follows the small-m kernel
 * (matmul_small_m_body.h): blocks of weight rows x token rows held in
 * accumulators, k in chunks so a block's weight rows stay in L1 while every
 * token block passes over them, one horizontal sum per accumulator at the
 * end of a chunk and a scalar tail for the k that a whole instruction does
 * not cover.
 */
#include "compute/matmul_bf16_dot.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "compute/cpu_variant.h"
#include "compute/matmul.h"
#include "compute/thread_buf.h"
#include "model/half.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Off by default; set once at start (matmul_bf16_dot_enable), read by every matmul. */
static _Atomic bool dot_on;

bool matmul_bf16_dot_supported(void)
{
	return cpu_variant_avx512_bf16();
}

int matmul_bf16_dot_enable(bool on)
{
	if (on && !matmul_bf16_dot_supported())
		return -EOPNOTSUPP;
	atomic_store_explicit(&dot_on, on, memory_order_relaxed);
	return 0;
}

bool matmul_bf16_dot_enabled(void)
{
	return atomic_load_explicit(&dot_on, memory_order_relaxed);
}

#if defined(__x86_64__)

/*
 * avx512bf16 implies avx512bw to both GCC and clang, and
 * cpu_variant_avx512_bf16() asks for both.
 */
#define DOT_TARGET __attribute__((target("avx512f,avx512bf16")))
/* BF16 values per vdpbf16ps: 16 float32 lanes, each the sum of 2 products. */
#define DOT_PAIRS 32
/*
 * A register block of 4 weight rows x 4 token rows: 16 accumulators and 8
 * loaded vectors of the 32 registers. 16 independent chains of vdpbf16ps
 * also cover its latency (5-6 cycles at 2 per cycle on the CPUs that have
 * it); the token remainder of a block (1-3 rows) has 4-12.
 */
#define DOT_ROWS 4
#define DOT_COLS 4
/*
 * Values of k per pass over a block of weight rows: 4 rows x 2048 BF16 = 16
 * KiB of weights and as much of one token block's activations stay in L1
 * (the small-m kernel's chunk, in values).
 */
#define DOT_K_CHUNK 2048
/*
 * At most this many bytes of rounded activations at a time: a call with
 * more token rows rounds and multiplies them in groups (each group reads
 * the weights again), so that no thread keeps a buffer sized for the
 * largest m it ever saw. 64 rows of k = 16384 fit; the small-m range stays
 * below that.
 */
#define DOT_X_BYTES_MAX ((size_t)2 << 20)

/* GCC warns that AVX vector arguments change the ABI: every function below
 * that takes one is static and inlined into its caller. */
#pragma GCC diagnostic ignored "-Wpsabi"

static inline __attribute__((always_inline)) DOT_TARGET __m512bh bf16x32_load(const uint16_t *p)
{
	__m512bh v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/*
 * xb[r][0:k) = x[r][0:k) rounded to BF16 (nearest even, by vcvtne2ps2bf16
 * and vcvtneps2bf16), for @rows rows; the last 1-31 values of a row go
 * through a masked load, so every value is rounded by the same instruction.
 */
static DOT_TARGET void x_round_bf16(const float *x, size_t ldx, uint32_t rows, uint32_t k,
				    uint16_t *xb, size_t ldxb)
{
	for (uint32_t r = 0; r < rows; r++) {
		const float *src = x + r * ldx;
		uint16_t *dst = xb + r * ldxb;
		uint32_t i = 0;

		for (; i + 32 <= k; i += 32) {
			/* the second operand fills the low 16 values */
			__m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16),
							 _mm512_loadu_ps(src + i));

			memcpy(dst + i, &h, sizeof(h));
		}
		for (; i < k; i += 16) {
			uint32_t left = k - i < 16 ? k - i : 16;
			__m256bh h = _mm512_cvtneps_pbh(
				_mm512_maskz_loadu_ps((__mmask16)((1u << left) - 1), src + i));

			memcpy(dst + i, &h, left * sizeof(uint16_t));
		}
	}
}

/*
 * y[c][r] += Σ_{i in [k0, k1)} w[r][i] · xb[c][i] for an R x C block; k0 is a
 * multiple of DOT_PAIRS and k1 - k0 is too except at the end of a row,
 * where the scalar tail finishes with the same rounded activations (every
 * product of two BF16 values is exact in float32, as in vdpbf16ps).
 */
static inline __attribute__((always_inline)) DOT_TARGET void
dot_block(const uint16_t *xb, size_t ldxb, const uint16_t *w, size_t ldw, uint32_t k0,
	  uint32_t k1, float *y, size_t ldy, const int R, const int C)
{
	__m512 acc[DOT_ROWS][DOT_COLS];
	uint32_t i = k0;

#pragma GCC unroll 16
	for (int r = 0; r < R; r++)
#pragma GCC unroll 16
		for (int c = 0; c < C; c++)
			acc[r][c] = _mm512_setzero_ps();
	for (; i + DOT_PAIRS <= k1; i += DOT_PAIRS) {
		__m512bh wv[DOT_ROWS], xv[DOT_COLS];

#pragma GCC unroll 16
		for (int r = 0; r < R; r++) {
			wv[r] = bf16x32_load(w + r * ldw + i);
			/* the same column of the next block of rows, as the small-m kernel */
			__builtin_prefetch(w + (r + DOT_ROWS) * ldw + i, 0, 0);
		}
#pragma GCC unroll 16
		for (int c = 0; c < C; c++)
			xv[c] = bf16x32_load(xb + c * ldxb + i);
#pragma GCC unroll 16
		for (int r = 0; r < R; r++)
#pragma GCC unroll 16
			for (int c = 0; c < C; c++)
				acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv[r], xv[c]);
	}
#pragma GCC unroll 16
	for (int r = 0; r < R; r++) {
#pragma GCC unroll 16
		for (int c = 0; c < C; c++) {
			float s = _mm512_reduce_add_ps(acc[r][c]);

			for (uint32_t j = i; j < k1; j++)
				s += bf16_to_f32(w[r * ldw + j]) * bf16_to_f32(xb[c * ldxb + j]);
			y[c * ldy + r] += s;
		}
	}
}

/* Every token row of @m against R weight rows, over [k0, k1). */
static inline __attribute__((always_inline)) DOT_TARGET void
dot_rows(const uint16_t *xb, size_t ldxb, uint32_t m, const uint16_t *w, size_t ldw,
	 uint32_t k0, uint32_t k1, float *y, size_t ldy, const int R)
{
	uint32_t c0 = 0;

	for (; c0 + DOT_COLS <= m; c0 += DOT_COLS)
		dot_block(xb + c0 * ldxb, ldxb, w, ldw, k0, k1, y + c0 * ldy, ldy, R, DOT_COLS);
	/* the last 1-3 token rows in one block: the weights are loaded once for them */
	switch (m - c0) {
	case 3:
		dot_block(xb + c0 * ldxb, ldxb, w, ldw, k0, k1, y + c0 * ldy, ldy, R, 3);
		break;
	case 2:
		dot_block(xb + c0 * ldxb, ldxb, w, ldw, k0, k1, y + c0 * ldy, ldy, R, 2);
		break;
	case 1:
		dot_block(xb + c0 * ldxb, ldxb, w, ldw, k0, k1, y + c0 * ldy, ldy, R, 1);
		break;
	default:
		break;
	}
}

/* y[0:m)[0:n) = xb · Wᵀ for rounded activations already in @xb. */
static DOT_TARGET void dot_tokens(const uint16_t *xb, size_t ldxb, uint32_t m, uint32_t k,
				  const uint16_t *w, size_t ldw, uint32_t n, float *y, size_t ldy)
{
	for (uint32_t c = 0; c < m; c++)
		memset(y + c * ldy, 0, sizeof(float) * n);
	for (uint32_t r0 = 0; r0 < n; r0 += DOT_ROWS) {
		const uint32_t rows = n - r0 < DOT_ROWS ? n - r0 : DOT_ROWS;
		const uint16_t *wb = w + r0 * ldw;

		for (uint32_t k0 = 0; k0 < k; k0 += DOT_K_CHUNK) {
			const uint32_t k1 = k - k0 < DOT_K_CHUNK ? k : k0 + DOT_K_CHUNK;

			if (rows == DOT_ROWS) {
				dot_rows(xb, ldxb, m, wb, ldw, k0, k1, y + r0, ldy, DOT_ROWS);
				continue;
			}
			for (uint32_t r = 0; r < rows; r++)
				dot_rows(xb, ldxb, m, wb + r * ldw, ldw, k0, k1, y + r0 + r, ldy, 1);
		}
	}
}

void matmul_bf16_dot(const float *x, size_t ldx, uint32_t m, uint32_t k, const uint16_t *w,
		     size_t ldw, uint32_t n, float *y, size_t ldy)
{
	/* rows of whole instructions: each starts 64-byte aligned in the buffer */
	const size_t ldxb = k ? ((size_t)k + DOT_PAIRS - 1) / DOT_PAIRS * DOT_PAIRS : DOT_PAIRS;
	const size_t row_bytes = ldxb * sizeof(uint16_t);
	uint32_t group = DOT_X_BYTES_MAX / row_bytes < DOT_COLS
				 ? DOT_COLS
				 : (uint32_t)(DOT_X_BYTES_MAX / row_bytes / DOT_COLS * DOT_COLS);
	uint16_t *xb;

	if (m == 0 || n == 0)
		return;
	group = group < m ? group : m;
	xb = thread_buf_get(THREAD_BUF_BF16_X, (size_t)group * row_bytes);
	if (!xb) {
		matmul_small_m(x, ldx, m, k, w, WEIGHT_BF16, ldw, n, y, ldy);
		return;
	}
	for (uint32_t c0 = 0; c0 < m; c0 += group) {
		const uint32_t rows = m - c0 < group ? m - c0 : group;

		x_round_bf16(x + (size_t)c0 * ldx, ldx, rows, k, xb, ldxb);
		dot_tokens(xb, ldxb, rows, k, w, ldw, n, y + (size_t)c0 * ldy, ldy);
	}
}

#else /* no AVX512_BF16 outside x86-64: never enabled, and the widening kernel if called */

void matmul_bf16_dot(const float *x, size_t ldx, uint32_t m, uint32_t k, const uint16_t *w,
		     size_t ldw, uint32_t n, float *y, size_t ldy)
{
	matmul_small_m(x, ldx, m, k, w, WEIGHT_BF16, ldw, n, y, ldy);
}

#endif
