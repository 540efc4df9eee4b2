/* SPDX-License-Identifier: MIT */
/*
 * matmul: the kernel choice for an expert's GEMM tile (see matmul.h for the
 * measurements behind it); the small-m kernel is in matmul_small_m.c.
 */
#include "matmul.h"

#include <cblas.h>

void matmul_xwt(enum matmul_kernel kernel, const float *x, size_t ldx, uint32_t m, uint32_t k,
		const float *w, size_t ldw, uint32_t n, float *y, size_t ldy)
{
	if (m == 0 || n == 0)
		return;
	if (kernel == MATMUL_AUTO)
		kernel = m == 1 ? MATMUL_SGEMV
			       : m <= matmul_small_m_max() ? MATMUL_SMALLM : MATMUL_SGEMM;
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
