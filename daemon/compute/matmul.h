/* SPDX-License-Identifier: MIT */
/*
 * matmul: y[m][n] = x[m][k] · W[n][k]ᵀ for one expert's rows and a tile of a
 * weight matrix in PyTorch's out×in layout, with the kernel picked by m.
 *
 * Why three kernels: an expert that receives few tokens is bound by reading
 * its weights once, and OpenBLAS's sgemm is far from that bound for small m
 * (it packs panels for large-m reuse). Measured on a 2-core AVX2 machine
 * (bench_matmul_kernels, see bench/): at m = 1 cblas_sgemv streams the
 * weights near the read bandwidth while sgemm runs 2.7x slower; for 2 <= m <=
 * matmul_small_m_max() our register-blocked kernel reads each weight row
 * once for all m tokens and beats sgemm (2x at m = 2); above it sgemm's
 * packing pays off. The bound depends on the vector width the CPU offers
 * (matmul_small_m.c lists the measurements).
 *
 * Weights may be float32, BF16 or F16 (an expert keeps its checkpoint's
 * dtype, model.h). OpenBLAS has neither a half-precision sgemv nor sgemm:
 * up to the small-m bound (m = 1 included) the small-m kernel widens the
 * weights in registers; above it panels of weight rows are widened into a
 * per-thread float32 buffer and multiplied by sgemm. Either way the result
 * is float32 compute on the stored values; the one exception is opt-in:
 * with bf16_dot on, BF16 weights in the small-m range are multiplied by
 * AVX512_BF16's dot product with the activations rounded to BF16
 * (matmul_bf16_dot.h).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compute/weight_dtype.h"


enum matmul_kernel {
	MATMUL_AUTO,   /* by m, as above */
	MATMUL_SGEMV,  /* one cblas_sgemv per row */
	MATMUL_SMALLM, /* matmul_small_m() */
	MATMUL_SGEMM,  /* cblas_sgemm */
};

/*
 * y (row stride ldy) = x (row stride ldx) · Wᵀ, W of dtype @wdtype with row stride ldw elements. The caller's thread runs
 * it; OpenBLAS must be single-threaded (blas_setup). For half-precision
 * weights MATMUL_SGEMV means the small-m kernel (there is no such sgemv).
 */
void matmul_xwt(enum matmul_kernel kernel, const float *x, size_t ldx, uint32_t m, uint32_t k,
		const void *w, enum weight_dtype wdtype, size_t ldw, uint32_t n, float *y,
		size_t ldy);

/* Which instantiation of the small-m kernel runs ("avx512", "avx2", "generic"). */
const char *matmul_small_m_variant(void);

/*
 * Where MATMUL_AUTO hands over from one kernel to the next: measured on the
 * machine at start (kernel_calibrate.h), else the variant's built-in bound.
 */
struct matmul_bounds {
	/* the largest m given to the small-m kernel, per weight dtype; 0: built-in */
	uint32_t small_m_max[WEIGHT_DTYPE_COUNT];
	bool small_m_at_1; /* float32, m = 1: the small-m kernel rather than sgemv */
};

/* The largest m that MATMUL_AUTO gives the small-m kernel for weights of @dt. */
uint32_t matmul_small_m_max(enum weight_dtype dt);
/* The variant's built-in bound (measured on one machine: matmul_small_m.c). */
uint32_t matmul_small_m_builtin_max(void);
/* The bounds in use. */
void matmul_bounds_get(struct matmul_bounds *ret);
/* Use @b from now on (NULL: the built-in bounds). Not while other threads run matmuls. */
void matmul_bounds_set(const struct matmul_bounds *b);
/*
 * Use the named instantiation from now on (tests and benchmarks compare
 * them). -EINVAL for an unknown name, -EOPNOTSUPP when the CPU lacks it.
 * Not for use while other threads run matmuls.
 */
int matmul_small_m_force(const char *name);

/* The small-m kernel itself (exposed for tests and the kernel benchmark). */
void matmul_small_m(const float *x, size_t ldx, uint32_t m, uint32_t k, const void *w,
		    enum weight_dtype wdtype, size_t ldw, uint32_t n, float *y, size_t ldy);
/* dst[0:n) = the @n weights at @w (dtype @wdtype) as float32, with the chosen variant. */
void matmul_widen(const void *w, enum weight_dtype wdtype, size_t n, float *dst);
