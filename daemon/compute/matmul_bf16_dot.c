/* SPDX-License-Identifier: MIT */
/*
 * matmul_bf16_dot: BF16 weights times BF16-rounded activations by
 * vdpbf16ps, float32 accumulation; see matmul_bf16_dot.h for what it costs
 * in accuracy. The activations are rounded once per call into a per-thread
 * buffer; the multiply is the small-m kernel's body (matmul_small_m_body.h:
 * blocks of weight rows x token rows held in accumulators, k in chunks so
 * a block's weight rows stay in L1 while every token block passes over
 * them, one horizontal sum per accumulator at the end of a chunk and a
 * scalar tail for the k that a whole instruction does not cover),
 * instantiated with BF16 activations and vdpbf16ps as its multiply-add.
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
/*
 * The small-m body's parameters. A step is one vdpbf16ps: 32 BF16 values
 * in 16 float32 lanes, each the sum of 2 products. A register block of 4
 * weight rows x 4 token rows holds 16 accumulators and 8 loaded vectors of
 * the 32 registers; its 16 independent chains also cover the instruction's
 * latency (5-6 cycles at 2 per cycle on the CPUs that have it). 4 rows x
 * 2048 BF16 = 16 KiB of weights and as much of one token block's
 * activations stay in L1 while the token blocks pass over them (the
 * float32 kernel's chunk, in values).
 */
#define DOT_PAIRS 32
#define DOT_COLS 4
#define SMALLM_TARGET DOT_TARGET
#define SMALLM_LANES 16
#define SMALLM_STEP DOT_PAIRS
#define SMALLM_ROWS 4
#define SMALLM_COLS DOT_COLS
#define SMALLM_K_CHUNK 2048
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

#define SMALLM_NAME dot_tokens
#define SMALLM_W uint16_t
#define SMALLM_WVEC __m512bh
#define SMALLM_WLOAD(p) bf16x32_load(p)
#define SMALLM_WFLOAT(p) bf16_to_f32(*(p))
#define SMALLM_X uint16_t
#define SMALLM_XVEC __m512bh
#define SMALLM_XFLOAT(p) bf16_to_f32(*(p))
/* every product of two BF16 values is exact in float32, in the tail as in vdpbf16ps */
#define SMALLM_MADD(acc, w, x) _mm512_dpbf16_ps((acc), (w), (x))
#define SMALLM_NO_WIDEN
#include "matmul_small_m_body.h"

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
