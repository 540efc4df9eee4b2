/* SPDX-License-Identifier: MIT */
/*
 * matmul: the kernel choice for an expert's GEMM tile (see matmul.h for the
 * measurements behind it); the small-m kernel is in matmul_small_m.c.
 */
#include "matmul.h"

#include <cblas.h>
#include <stdatomic.h>

#include "compute/matmul_bf16_dot.h"
#include "compute/thread_buf.h"

/*
 * The float32 panel of half-precision weights that sgemm multiplies: at
 * most this many bytes of weight rows at a time. sgemm packs x again for
 * every call, so a panel must be tall enough for that to stay small next to
 * the multiply (rows x k x m flops against m x k floats packed: 128 rows of
 * a 14336-wide down projection keep it under a tenth), and small enough to
 * stay one buffer per thread (thread_buf.h).
 */
#define WIDEN_PANEL_BYTES (8u << 20)

/*
 * Half-precision weights for an m above the small-m bound: panels of rows
 * widened into this thread's buffer, each multiplied by sgemm. Without a
 * buffer the small-m kernel does it (slower for large m, the same values).
 */
static void matmul_half_sgemm(const float *x, size_t ldx, uint32_t m, uint32_t k,
			      const void *w, enum weight_dtype wdtype, size_t ldw, uint32_t n,
			      float *y, size_t ldy)
{
	float *panel = thread_buf_get(THREAD_BUF_WIDEN_PANEL, WIDEN_PANEL_BYTES);
	uint32_t panel_rows = (uint32_t)(WIDEN_PANEL_BYTES / sizeof(float) / k);

	if (!panel || panel_rows == 0) {
		matmul_small_m(x, ldx, m, k, w, wdtype, ldw, n, y, ldy);
		return;
	}
	for (uint32_t r0 = 0; r0 < n; r0 += panel_rows) {
		uint32_t rows = n - r0 < panel_rows ? n - r0 : panel_rows;
		const uint8_t *src = (const uint8_t *)w + (size_t)r0 * ldw * weight_dtype_size(wdtype);

		for (uint32_t r = 0; r < rows; r++)
			matmul_widen(src + (size_t)r * ldw * weight_dtype_size(wdtype), wdtype, k,
				     panel + (size_t)r * k);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)rows, (int)k,
			    1.0f, x, (int)ldx, panel, (int)k, 0.0f, y + r0, (int)ldy);
	}
}

/*
 * The measured bounds (0: built-in). Set once at start, before the workers
 * multiply, and read by every matmul: relaxed atomics, no lock.
 */
static _Atomic uint32_t measured_max[WEIGHT_DTYPE_COUNT];
static _Atomic bool small_m_at_1;

uint32_t matmul_small_m_max(enum weight_dtype dt)
{
	uint32_t m = atomic_load_explicit(&measured_max[dt], memory_order_relaxed);

	return m ? m : matmul_small_m_builtin_max();
}

void matmul_bounds_get(struct matmul_bounds *ret)
{
	for (int dt = 0; dt < WEIGHT_DTYPE_COUNT; dt++)
		ret->small_m_max[dt] = matmul_small_m_max((enum weight_dtype)dt);
	ret->small_m_at_1 = atomic_load_explicit(&small_m_at_1, memory_order_relaxed);
}

void matmul_bounds_set(const struct matmul_bounds *b)
{
	for (int dt = 0; dt < WEIGHT_DTYPE_COUNT; dt++)
		atomic_store_explicit(&measured_max[dt], b ? b->small_m_max[dt] : 0,
				      memory_order_relaxed);
	atomic_store_explicit(&small_m_at_1, b && b->small_m_at_1, memory_order_relaxed);
}

#define BF16_DOT_MIN_ROWS 4

void matmul_xwt(enum matmul_kernel kernel, const float *x, size_t ldx, uint32_t m, uint32_t k,
		const void *w, enum weight_dtype wdtype, size_t ldw, uint32_t n, float *y, size_t ldy)
{
	const bool chosen_here = kernel == MATMUL_AUTO;

	if (m == 0 || n == 0)
		return;
	if (kernel == MATMUL_AUTO)
		kernel = m == 1 && !atomic_load_explicit(&small_m_at_1, memory_order_relaxed)
				 ? MATMUL_SGEMV
			 : m <= matmul_small_m_max(wdtype) ? MATMUL_SMALLM
							   : MATMUL_SGEMM;
	if (wdtype != WEIGHT_F32 && kernel == MATMUL_SGEMV)
		kernel = MATMUL_SMALLM;
	switch (kernel) {
	case MATMUL_SGEMV:
		for (uint32_t r = 0; r < m; r++)
			cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)k, 1.0f, w, (int)ldw,
				    x + r * ldx, 1, 0.0f, y + r * ldy, 1);
		break;
	case MATMUL_SMALLM:
		/*
		 * The opt-in: BF16 activations, half the instructions (bf16_dot).
		 * Chosen here only from BF16_DOT_MIN_ROWS rows: below, reading the
		 * weights bounds both kernels and the dot kernel reads them
		 * slower (bench_matmul_kernels --bf16-dot: 0.90-0.92x at one row,
		 * 0.98-1.15x at four, 1.5-2.0x from 16), so it would be both
		 * slower and less exact. A caller that asks for the small-m
		 * kernel by name gets it at any m.
		 */
		if (wdtype == WEIGHT_BF16 && matmul_bf16_dot_enabled() &&
		    (!chosen_here || m >= BF16_DOT_MIN_ROWS)) {
			matmul_bf16_dot(x, ldx, m, k, w, ldw, n, y, ldy);
			break;
		}
		matmul_small_m(x, ldx, m, k, w, wdtype, ldw, n, y, ldy);
		break;
	case MATMUL_AUTO:
	case MATMUL_SGEMM:
		if (wdtype != WEIGHT_F32) {
			matmul_half_sgemm(x, ldx, m, k, w, wdtype, ldw, n, y, ldy);
			break;
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f,
			    x, (int)ldx, w, (int)ldw, 0.0f, y, (int)ldy);
		break;
	}
}
