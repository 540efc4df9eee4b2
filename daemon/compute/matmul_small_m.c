/* SPDX-License-Identifier: MIT */
/*
 * matmul_small_m: y = x·Wᵀ for an expert that received a few tokens (2 to
 * matmul_small_m_max()), streaming each weight row from memory once for all of
 * them. The body (matmul_small_m_body.h) is instantiated for AVX-512, for
 * AVX2 with FMA and F16C and for baseline x86-64, each for float32, BF16 and
 * F16 weights, and the widest one the CPU runs is picked at first use:
 * portable binaries, the speed of the machine they run on, as OpenBLAS picks
 * its own kernels at run time.
 */
#include "matmul.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "cpu_variant.h"
#include "model/half.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/*
 * Floats of k per pass over a block of weight rows: 4 rows x 2048 floats =
 * 32 KiB stay in L1/L2 while every token block passes over them. Shorter
 * chunks cost more in horizontal sums than they save (bench_matmul_kernels:
 * 256 ran m = 2..16 at 0.6-0.7x of 1024 or more).
 */
#define SMALLM_K_CHUNK 2048
/*
 * Prefetch: each weight load also prefetches the same column of the next
 * block of rows (the body's SMALLM_ROWS further down). A fixed distance
 * within the row (2 KiB, as before) falls into the rows the block is
 * already reading whenever a row is that short, as a BF16 row of 1024 is,
 * and never reaches the next block. Measured with bench_engine (shape A,
 * 2 threads, vs_weight_read): BF16 1.51 at T = 1 and 1.87 at T = 16 against
 * 1.76 and 2.40 with the fixed distance, F32 at T = 16 1.49 against 1.70;
 * two blocks ahead measured the same as one within the noise.
 */

/* GCC warns that AVX vector arguments change the ABI: every function below
 * that takes one is static and inlined into its instantiation. */
#pragma GCC diagnostic ignored "-Wpsabi"

/* Float32 weights: a plain (unaligned) load. */
#define SMALLM_F32_LOAD(p)                                                                     \
	({                                                                                     \
		SMALLM_VEC v_;                                                                 \
		memcpy(&v_, (p), sizeof(v_));                                                  \
		v_;                                                                            \
	})

#if defined(__x86_64__)
/*
 * Half-precision weights widened in registers: BF16 is the upper half of a
 * float32 (zero-extend, shift left 16); F16 by the F16C conversion
 * (vcvtph2ps, part of AVX-512F and F16C). Both are exact.
 */
static inline __attribute__((always_inline, target("avx512f"))) __m512
bf16x16_load(const uint16_t *p)
{
	__m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)p));

	return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}

static inline __attribute__((always_inline, target("avx512f"))) __m512
f16x16_load(const uint16_t *p)
{
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

static inline __attribute__((always_inline, target("avx2"))) __m256
bf16x8_load(const uint16_t *p)
{
	__m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));

	return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}

static inline __attribute__((always_inline, target("avx,f16c"))) __m256
f16x8_load(const uint16_t *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}

#define SMALLM_TARGET __attribute__((target("avx512f,fma")))
#define SMALLM_LANES 16
#define SMALLM_ROWS 4
#define SMALLM_COLS 4

#define SMALLM_NAME small_m_avx512_f32
#define SMALLM_W float
#define SMALLM_WLOAD(p) SMALLM_F32_LOAD(p)
#define SMALLM_WFLOAT(p) (*(p))
#include "matmul_small_m_body.h"

#define SMALLM_NAME small_m_avx512_bf16
#define SMALLM_W uint16_t
#define SMALLM_WLOAD(p) ((SMALLM_VEC)bf16x16_load(p))
#define SMALLM_WFLOAT(p) bf16_to_f32(*(p))
#include "matmul_small_m_body.h"

#define SMALLM_NAME small_m_avx512_f16
#define SMALLM_W uint16_t
#define SMALLM_WLOAD(p) ((SMALLM_VEC)f16x16_load(p))
#define SMALLM_WFLOAT(p) f16_to_f32(*(p))
#include "matmul_small_m_body.h"

#undef SMALLM_TARGET
#undef SMALLM_LANES
#undef SMALLM_ROWS
#undef SMALLM_COLS

#define SMALLM_TARGET __attribute__((target("avx2,fma,f16c")))
#define SMALLM_LANES 8
#define SMALLM_ROWS 4
#define SMALLM_COLS 2

#define SMALLM_NAME small_m_avx2_f32
#define SMALLM_W float
#define SMALLM_WLOAD(p) SMALLM_F32_LOAD(p)
#define SMALLM_WFLOAT(p) (*(p))
#include "matmul_small_m_body.h"

#define SMALLM_NAME small_m_avx2_bf16
#define SMALLM_W uint16_t
#define SMALLM_WLOAD(p) ((SMALLM_VEC)bf16x8_load(p))
#define SMALLM_WFLOAT(p) bf16_to_f32(*(p))
#include "matmul_small_m_body.h"

#define SMALLM_NAME small_m_avx2_f16
#define SMALLM_W uint16_t
#define SMALLM_WLOAD(p) ((SMALLM_VEC)f16x8_load(p))
#define SMALLM_WFLOAT(p) f16_to_f32(*(p))
#include "matmul_small_m_body.h"

#undef SMALLM_TARGET
#undef SMALLM_LANES
#undef SMALLM_ROWS
#undef SMALLM_COLS
#endif

/* Baseline: SSE2 on x86-64, whatever the compiler targets elsewhere; half
 * precision widened one value at a time. */
#define SMALLM_TARGET
#define SMALLM_LANES 4
#define SMALLM_ROWS 4
#define SMALLM_COLS 2
#define SMALLM_HALF4(p, f) ((SMALLM_VEC){ f((p)[0]), f((p)[1]), f((p)[2]), f((p)[3]) })

#define SMALLM_NAME small_m_generic_f32
#define SMALLM_W float
#define SMALLM_WLOAD(p) SMALLM_F32_LOAD(p)
#define SMALLM_WFLOAT(p) (*(p))
#include "matmul_small_m_body.h"

#define SMALLM_NAME small_m_generic_bf16
#define SMALLM_W uint16_t
#define SMALLM_WLOAD(p) SMALLM_HALF4(p, bf16_to_f32)
#define SMALLM_WFLOAT(p) bf16_to_f32(*(p))
#include "matmul_small_m_body.h"

#define SMALLM_NAME small_m_generic_f16
#define SMALLM_W uint16_t
#define SMALLM_WLOAD(p) SMALLM_HALF4(p, f16_to_f32)
#define SMALLM_WFLOAT(p) f16_to_f32(*(p))
#include "matmul_small_m_body.h"

#undef SMALLM_HALF4
#undef SMALLM_TARGET
#undef SMALLM_LANES
#undef SMALLM_ROWS
#undef SMALLM_COLS

typedef void (*small_m_fn)(const float *x, size_t ldx, uint32_t m, uint32_t k, const void *w,
			   size_t ldw, uint32_t n, float *y, size_t ldy);
typedef void (*widen_fn)(const void *src, size_t n, float *dst);

#define VARIANT_FNS(prefix)                                                                    \
	{ prefix##_f32, prefix##_bf16, prefix##_f16 },                                         \
	{ prefix##_f32_widen, prefix##_bf16_widen, prefix##_f16_widen }

/*
 * The instantiations, widest first, each with the largest m that
 * MATMUL_AUTO gives it, from bench_matmul_kernels (--variant; one thread,
 * weights from memory, both expert shapes) on a Zen 5 machine. Which sgemm
 * it races depends on the kernel OpenBLAS picks for the CPU
 * (OPENBLAS_CORETYPE can force one), so the bounds suit both seen there:
 * - avx512 (4x4 blocks of 16 lanes): against OpenBLAS's AVX-512 kernel
 *   (Cooperlake) ahead up to m = 24-32 (1.0-1.1x there, 2.0-2.3x at m = 2),
 *   0.84-0.99x at 48; against its Haswell kernel ahead up to 64. Bound 32.
 * - avx2 (4x2 blocks of 8 lanes): against the Haswell kernel ahead up to 32
 *   (1.04-1.3x), 0.98x at 48; bound 24 for a margin.
 * - generic (SSE2, 4 lanes): ahead up to 4 (1.04x), 0.7x at 8.
 */
static const struct small_m_variant {
	struct cpu_variant cpu; /* first: cpu_variant.h */
	small_m_fn fn[WEIGHT_DTYPE_COUNT] /* by enum weight_dtype */;
	widen_fn widen[WEIGHT_DTYPE_COUNT];
	uint32_t max_m;
} variants[] = {
#if defined(__x86_64__)
	{ { "avx512", cpu_variant_avx512 }, VARIANT_FNS(small_m_avx512), 32 },
	{ { "avx2", cpu_variant_avx2 }, VARIANT_FNS(small_m_avx2), 24 },
#endif
	{ { "generic", cpu_variant_baseline }, VARIANT_FNS(small_m_generic), 4 },
};

#define N_VARIANTS (sizeof(variants) / sizeof(variants[0]))

/* Chosen once; a race between first callers is benign: all store the same value. */
static _Atomic(const struct small_m_variant *) chosen;

static const struct small_m_variant *variant_get(void)
{
	const struct small_m_variant *v = atomic_load_explicit(&chosen, memory_order_relaxed);

	if (v)
		return v;
	v = cpu_variant_first(variants, N_VARIANTS, sizeof(variants[0]));
	atomic_store_explicit(&chosen, v, memory_order_relaxed);
	return v;
}

const char *matmul_small_m_variant(void)
{
	return variant_get()->cpu.name;
}

uint32_t matmul_small_m_builtin_max(void)
{
	return variant_get()->max_m;
}

int matmul_small_m_force(const char *name)
{
	const void *v;
	int r = cpu_variant_find(variants, N_VARIANTS, sizeof(variants[0]), name, &v);

	if (r == 0)
		atomic_store_explicit(&chosen, v, memory_order_relaxed);
	return r;
}

void matmul_small_m(const float *x, size_t ldx, uint32_t m, uint32_t k, const void *w,
		    enum weight_dtype wdtype, size_t ldw, uint32_t n, float *y, size_t ldy)
{
	variant_get()->fn[wdtype](x, ldx, m, k, w, ldw, n, y, ldy);
}

void matmul_widen(const void *w, enum weight_dtype wdtype, size_t n, float *dst)
{
	variant_get()->widen[wdtype](w, n, dst);
}
