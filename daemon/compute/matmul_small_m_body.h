/* SPDX-License-Identifier: MIT */
/*
 * matmul_small_m_body.h: the small-m kernel, instantiated once per vector
 * width and weight dtype by matmul_small_m.c, and for BF16 activations by
 * matmul_bf16_dot.c. Define before including:
 *   SMALLM_NAME   the function's name
 *   SMALLM_TARGET its target attribute (may be empty)
 *   SMALLM_LANES  floats per vector (8: AVX2, 16: AVX-512)
 *   SMALLM_ROWS   weight rows per register block
 *   SMALLM_COLS   token rows per register block
 *   SMALLM_K_CHUNK  values of k per pass over a block of weight rows
 *   SMALLM_W      the weights' element type (float, or uint16_t for BF16/F16)
 *   SMALLM_WLOAD(p)   SMALLM_LANES weights at p as a float vector
 *   SMALLM_WFLOAT(p)  the weight at p as a float (the row's scalar tail)
 * and, to multiply in another form than float vectors (the dot-product
 * kernel), any of these, whose defaults are the float32 ones:
 *   SMALLM_X      the activations' element type (float)
 *   SMALLM_STEP   values of k per step (SMALLM_LANES)
 *   SMALLM_WVEC, SMALLM_XVEC  what SMALLM_WLOAD returns and a step of
 *                 activations is loaded as (the float vector)
 *   SMALLM_MADD(acc, w, x)  acc plus the products of a step (acc + w * x)
 *   SMALLM_XFLOAT(p)  the activation at p as a float (*(p))
 *   SMALLM_NO_WIDEN   no widening function (weights that are not widened)
 * The weight and activation macros are undefined again at the end, ready
 * for the next dtype of the same width; the including file undefines the
 * width's own.
 * Half-precision weights are widened in registers, once per load and used
 * for every token of the block: the products equal float32 compute on the
 * same stored values.
 * Registers: SMALLM_ROWS * SMALLM_COLS accumulators plus ROWS + COLS loaded
 * vectors must fit the register file (16 for AVX2: 4x2 -> 14; 32 for
 * AVX-512: 4x4 -> 24), or the accumulators spill and the kernel becomes
 * load-bound.
 */

#ifndef SMALLM_X
#define SMALLM_X float
#endif
#ifndef SMALLM_STEP
#define SMALLM_STEP SMALLM_LANES
#endif
#ifndef SMALLM_WVEC
#define SMALLM_WVEC SMALLM_VEC
#endif
#ifndef SMALLM_XVEC
#define SMALLM_XVEC SMALLM_VEC
#endif
#ifndef SMALLM_MADD
#define SMALLM_MADD(acc, w, x) ((acc) + (w) * (x))
#endif
#ifndef SMALLM_XFLOAT
#define SMALLM_XFLOAT(p) (*(p))
#endif

#define SMALLM_CAT2(a, b) a##b
#define SMALLM_CAT(a, b) SMALLM_CAT2(a, b)
#define SMALLM_VEC SMALLM_CAT(smallm_vf, SMALLM_LANES)
#define SMALLM_BLOCK SMALLM_CAT(SMALLM_NAME, _block)
#define SMALLM_HSUM SMALLM_CAT(SMALLM_NAME, _hsum)
#define SMALLM_WIDEN SMALLM_CAT(SMALLM_NAME, _widen)

typedef float SMALLM_VEC __attribute__((vector_size(SMALLM_LANES * 4)));

/*
 * The sum of a vector's lanes by halving (16 -> 8 -> 4 lanes, then scalars):
 * a handful of instructions where a lane-by-lane loop compiled to dozens of
 * extracts, and every block ends with R x C of these.
 */
static inline __attribute__((always_inline)) SMALLM_TARGET float
SMALLM_HSUM(SMALLM_VEC v)
{
	typedef float v4 __attribute__((vector_size(16)));
#if SMALLM_LANES == 16
	typedef float v8 __attribute__((vector_size(32)));
	v8 h8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
		__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
	v4 h4 = __builtin_shufflevector(h8, h8, 0, 1, 2, 3) +
		__builtin_shufflevector(h8, h8, 4, 5, 6, 7);
#elif SMALLM_LANES == 8
	v4 h4 = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
#else
	v4 h4 = v;
#endif
	return (h4[0] + h4[2]) + (h4[1] + h4[3]);
}

/*
 * y[c][r] += Σ_{i in [k0, k1)} w[r][i] · x[c][i] for an R x C block; k0 and
 * k1 - k0 are multiples of the step except at the end of a row, where the
 * scalar tail finishes.
 */
static inline __attribute__((always_inline)) SMALLM_TARGET void
SMALLM_BLOCK(const SMALLM_X *x, size_t ldx, const SMALLM_W *w, size_t ldw, uint32_t k0,
	     uint32_t k1, float *y, size_t ldy, const int R, const int C)
{
	SMALLM_VEC acc[SMALLM_ROWS][SMALLM_COLS];
	uint32_t i = k0;

#pragma GCC unroll 16
	for (int r = 0; r < R; r++)
#pragma GCC unroll 16
		for (int c = 0; c < C; c++)
			acc[r][c] = (SMALLM_VEC){ 0 };
	for (; i + SMALLM_STEP <= k1; i += SMALLM_STEP) {
		SMALLM_WVEC wv[SMALLM_ROWS];
		SMALLM_XVEC xv[SMALLM_COLS];

#pragma GCC unroll 16
		for (int r = 0; r < R; r++) {
			wv[r] = SMALLM_WLOAD(w + r * ldw + i);
			__builtin_prefetch(w + (r + SMALLM_ROWS) * ldw + i, 0, 0);
		}
#pragma GCC unroll 16
		for (int c = 0; c < C; c++)
			memcpy(&xv[c], x + c * ldx + i, sizeof(SMALLM_XVEC));
#pragma GCC unroll 16
		for (int r = 0; r < R; r++)
#pragma GCC unroll 16
			for (int c = 0; c < C; c++)
				acc[r][c] = SMALLM_MADD(acc[r][c], wv[r], xv[c]);
	}
#pragma GCC unroll 16
	for (int r = 0; r < R; r++) {
#pragma GCC unroll 16
		for (int c = 0; c < C; c++) {
			float s = SMALLM_HSUM(acc[r][c]);

			for (uint32_t j = i; j < k1; j++)
				s += SMALLM_WFLOAT(w + r * ldw + j) * SMALLM_XFLOAT(x + c * ldx + j);
			y[c * ldy + r] += s;
		}
	}
}

static SMALLM_TARGET void SMALLM_NAME(const SMALLM_X *x, size_t ldx, uint32_t m, uint32_t k,
				      const void *wp, size_t ldw, uint32_t n, float *y, size_t ldy)
{
	const SMALLM_W *w = wp;

	for (uint32_t c = 0; c < m; c++)
		memset(y + c * ldy, 0, sizeof(float) * n);
	for (uint32_t r0 = 0; r0 < n; r0 += SMALLM_ROWS) {
		const uint32_t rows = n - r0 < SMALLM_ROWS ? n - r0 : SMALLM_ROWS;

		/* k in chunks, so the block's weight rows stay in L1 while every
		 * token block passes over them: the weights come from memory once */
		for (uint32_t k0 = 0; k0 < k; k0 += SMALLM_K_CHUNK) {
			const uint32_t k1 = k - k0 < SMALLM_K_CHUNK ? k : k0 + SMALLM_K_CHUNK;
			const SMALLM_W *wb = w + r0 * ldw;
			uint32_t c0 = 0;

			if (rows == SMALLM_ROWS) {
				for (; c0 + SMALLM_COLS <= m; c0 += SMALLM_COLS)
					SMALLM_BLOCK(x + c0 * ldx, ldx, wb, ldw, k0, k1,
						     y + c0 * ldy + r0, ldy, SMALLM_ROWS,
						     SMALLM_COLS);
				for (; c0 < m; c0++)
					SMALLM_BLOCK(x + c0 * ldx, ldx, wb, ldw, k0, k1,
						     y + c0 * ldy + r0, ldy, SMALLM_ROWS, 1);
			} else {
				for (uint32_t r = 0; r < rows; r++)
					for (c0 = 0; c0 < m; c0++)
						SMALLM_BLOCK(x + c0 * ldx, ldx, wb + r * ldw, ldw,
							     k0, k1, y + c0 * ldy + r0 + r, ldy, 1,
							     1);
			}
		}
	}
}

#ifndef SMALLM_NO_WIDEN
/*
 * dst[0:n) = the weights at src[0:n) as floats: a panel widened for sgemm
 * (matmul.c's large-m path for half-precision weights).
 */
static __attribute__((unused)) SMALLM_TARGET void SMALLM_WIDEN(const void *srcp, size_t n,
							       float *dst)
{
	const SMALLM_W *src = srcp;
	size_t i = 0;

	for (; i + SMALLM_LANES <= n; i += SMALLM_LANES) {
		SMALLM_VEC v = SMALLM_WLOAD(src + i);

		memcpy(dst + i, &v, sizeof(v));
	}
	for (; i < n; i++)
		dst[i] = SMALLM_WFLOAT(src + i);
}
#endif

#undef SMALLM_WIDEN
#undef SMALLM_BLOCK
#undef SMALLM_HSUM
#undef SMALLM_VEC
#undef SMALLM_CAT
#undef SMALLM_CAT2
#undef SMALLM_NAME
#undef SMALLM_W
#undef SMALLM_WLOAD
#undef SMALLM_WFLOAT
#undef SMALLM_X
#undef SMALLM_STEP
#undef SMALLM_WVEC
#undef SMALLM_XVEC
#undef SMALLM_MADD
#undef SMALLM_XFLOAT
#undef SMALLM_NO_WIDEN
