/* SPDX-License-Identifier: MIT */
/*
 * matmul_small_m: y = x·Wᵀ for an expert that received a few tokens (2 to
 * matmul_small_m_max()), streaming each weight row from memory once for all of
 * them. The body (matmul_small_m_body.h) is instantiated for AVX-512, for
 * AVX2 with FMA and for baseline x86-64, and the widest one the CPU runs is
 * picked at first use: portable binaries, the speed of the machine they run
 * on, as OpenBLAS picks its own kernels at run time.
 */
#include "matmul.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "cpu_variant.h"

/*
 * Floats of k per pass over a block of weight rows: 4 rows x 2048 floats =
 * 32 KiB stay in L1/L2 while every token block passes over them. Shorter
 * chunks cost more in horizontal sums than they save (bench_matmul_kernels:
 * 256 ran m = 2..16 at 0.6-0.7x of 1024 or more).
 */
#define SMALLM_K_CHUNK 2048
/*
 * Prefetch each weight row this many floats ahead: the hardware prefetcher
 * alone kept a decode step at about 1.3x the time of a plain read of the
 * weights; 256-1024 ahead all cut that by 10-15% (t=1 and 16 on the
 * Mixtral-like shape), 512 sits in the middle.
 */
#define SMALLM_PREFETCH 512

/* GCC warns that AVX vector arguments change the ABI: every function below
 * that takes one is static and inlined into its instantiation. */
#pragma GCC diagnostic ignored "-Wpsabi"

#if defined(__x86_64__)
#define SMALLM_NAME small_m_avx512
#define SMALLM_TARGET __attribute__((target("avx512f,fma")))
#define SMALLM_LANES 16
#define SMALLM_ROWS 4
#define SMALLM_COLS 4
#include "matmul_small_m_body.h"

#define SMALLM_NAME small_m_avx2
#define SMALLM_TARGET __attribute__((target("avx2,fma")))
#define SMALLM_LANES 8
#define SMALLM_ROWS 4
#define SMALLM_COLS 2
#include "matmul_small_m_body.h"
#endif

/* Baseline: SSE2 on x86-64, whatever the compiler targets elsewhere. */
#define SMALLM_NAME small_m_generic
#define SMALLM_TARGET
#define SMALLM_LANES 4
#define SMALLM_ROWS 4
#define SMALLM_COLS 2
#include "matmul_small_m_body.h"

typedef void (*small_m_fn)(const float *x, size_t ldx, uint32_t m, uint32_t k, const float *w,
			   size_t ldw, uint32_t n, float *y, size_t ldy);

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
	small_m_fn fn;
	uint32_t max_m;
} variants[] = {
#if defined(__x86_64__)
	{ { "avx512", cpu_variant_avx512 }, small_m_avx512, 32 },
	{ { "avx2", cpu_variant_avx2 }, small_m_avx2, 24 },
#endif
	{ { "generic", cpu_variant_baseline }, small_m_generic, 4 },
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

uint32_t matmul_small_m_max(void)
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

void matmul_small_m(const float *x, size_t ldx, uint32_t m, uint32_t k, const float *w,
		    size_t ldw, uint32_t n, float *y, size_t ldy)
{
	variant_get()->fn(x, ldx, m, k, w, ldw, n, y, ldy);
}
