/* SPDX-License-Identifier: MIT */
/*
 * Tests of the compute kernels: matmul_xwt with every kernel (SGEMV, small-m,
 * SGEMM and the automatic choice) and every weight dtype (F32, BF16, F16:
 * half precision widened in registers, or in panels for sgemm, and bitwise
 * equal to float32 compute on the same values) against a naive double-precision product
 * over a grid of shapes (m 1..40, odd and even, across the small-m limit; k
 * and n around the 8-wide vector and 4-row blocks) with row strides wider
 * than the rows, whose padding holds NaN on the inputs and a sentinel on the
 * output so a stride bug shows; every small-m variant this CPU runs (the
 * test prints which ran and which the CPU lacks, and a variant whose
 * features /proc/cpuinfo lists must run); activation_apply against libm's
 * double formulas, large |x| included; and the OpenBLAS the engine's
 * programs load: the serial build from MOE_OPENBLAS_SERIAL_DIR, a threaded
 * one refused by name, and sgemm from several threads at once bitwise equal
 * to one thread's (the buffer lock of blas_buffer_lock.c; without it about
 * 1 in 300 results here is wrong).
 */
#include "test_assert.h"

#include <errno.h>

#include <float.h>
#include <cblas.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/activations.h"
#include "compute/blas_setup.h"
#include "compute/matmul.h"
#include "model/half.h"
#include "test_cpu.h"
#include "util/rng.h"

/* ---------------------------------------------------------------- helpers */

/* Uniform in [-1, 1). */
static float rng_sym(uint64_t *state)
{
	return (float)((double)(rng_splitmix64(state) >> 11) * 0x1p-52 - 1.0);
}

static const float SENTINEL = 12345.0f;

static const char *kernel_name(enum matmul_kernel k)
{
	switch (k) {
	case MATMUL_AUTO:
		return "auto";
	case MATMUL_SGEMV:
		return "sgemv";
	case MATMUL_SMALLM:
		return "smallm";
	case MATMUL_SGEMM:
		return "sgemm";
	}
	return "?";
}

/* Round @v to weight dtype @dt and back: the value a weight of that dtype holds. */
static float as_dtype(float v, enum weight_dtype dt)
{
	return dt == WEIGHT_BF16 ? bf16_to_f32(f32_to_bf16(v))
	       : dt == WEIGHT_F16 ? f16_to_f32(f32_to_f16(v))
			      : v;
}

/* @n weights as dtype @dt from their float32 values (already representable). */
static void *weights_of(const float *w, size_t n, enum weight_dtype dt)
{
	uint16_t *h;

	if (dt == WEIGHT_F32) {
		float *f = malloc(sizeof(float) * (n ?: 1));

		assert_non_null(f);
		memcpy(f, w, sizeof(float) * n);
		return f;
	}
	h = malloc(sizeof(uint16_t) * (n ?: 1));
	assert_non_null(h);
	for (size_t i = 0; i < n; i++)
		h[i] = dt == WEIGHT_BF16 ? f32_to_bf16(w[i]) : f32_to_f16(w[i]);
	return h;
}

/*
 * One product: x [m][k] with stride ldx, w [n][k] of dtype @dt with stride
 * ldw, y [m][n] with stride ldy; padding columns of x and w are NaN, y's
 * padding and rows are pre-filled with a sentinel.
 */
static void check_product_as(enum matmul_kernel kernel, enum weight_dtype dt, uint32_t m,
			     uint32_t k, uint32_t n, size_t ldx, size_t ldw, size_t ldy,
			     uint64_t *seed)
{
	float *x = malloc(sizeof(float) * m * ldx);
	float *w = malloc(sizeof(float) * n * ldw);
	float *y = malloc(sizeof(float) * m * ldy);
	void *wt;

	assert_true(x && w && y);
	for (size_t i = 0; i < m * ldx; i++)
		x[i] = i % ldx < k ? rng_sym(seed) : NAN;
	for (size_t i = 0; i < n * ldw; i++)
		w[i] = i % ldw < k ? as_dtype(rng_sym(seed), dt) : NAN;
	for (size_t i = 0; i < m * ldy; i++)
		y[i] = SENTINEL;
	wt = weights_of(w, n * ldw, dt);

	matmul_xwt(kernel, x, ldx, m, k, wt, dt, ldw, n, y, ldy);

	for (uint32_t r = 0; r < m; r++) {
		for (uint32_t c = 0; c < n; c++) {
			double ref = 0, mag = 0, got = y[r * ldy + c];

			for (uint32_t i = 0; i < k; i++) {
				ref += (double)x[r * ldx + i] * w[c * ldw + i];
				mag += fabs((double)x[r * ldx + i] * w[c * ldw + i]);
			}
			/* float accumulation: error grows like sqrt(k) ulps of the magnitude */
			if (!(fabs(got - ref) <= 1e-5 * sqrt((double)k) * mag + 1e-30))
				fail_msg("%s %s m=%u k=%u n=%u ldx=%zu ldw=%zu ldy=%zu: y[%u][%u] = "
					 "%.9g, expected %.9g",
					 kernel_name(kernel), weight_dtype_name(dt), m, k, n, ldx, ldw,
					 ldy, r, c, got, ref);
		}
		for (size_t c = n; c < ldy; c++)
			if (y[r * ldy + c] != SENTINEL)
				fail_msg("%s m=%u k=%u n=%u: wrote y[%u][%zu] in the row padding",
					 kernel_name(kernel), m, k, n, r, c);
	}
	free(wt);
	free(x);
	free(w);
	free(y);
}

static const enum weight_dtype weight_dtypes[] = { WEIGHT_F32, WEIGHT_BF16, WEIGHT_F16 };
#define N_WEIGHT_DTYPES (sizeof(weight_dtypes) / sizeof(weight_dtypes[0]))

/* check_product_as() for every weight dtype. */
static void check_product(enum matmul_kernel kernel, uint32_t m, uint32_t k, uint32_t n,
			  size_t ldx, size_t ldw, size_t ldy, uint64_t *seed)
{
	for (size_t i = 0; i < N_WEIGHT_DTYPES; i++)
		check_product_as(kernel, weight_dtypes[i], m, k, n, ldx, ldw, ldy, seed);
}

/* ---------------------------------------------------------------- matmul */

static void test_matmul_grid(void **state)
{
	static const enum matmul_kernel kernels[] = { MATMUL_SGEMV, MATMUL_SMALLM, MATMUL_SGEMM,
						      MATMUL_AUTO };
	static const uint32_t ks[] = { 1, 7, 8, 9, 63, 64, 100 };
	static const uint32_t ns[] = { 1, 3, 4, 5, 17 };
	uint64_t seed = 1;

	(void)state;
	for (size_t ki = 0; ki < sizeof(kernels) / sizeof(kernels[0]); ki++)
		for (uint32_t m = 1; m <= 40; m++)
			for (size_t a = 0; a < sizeof(ks) / sizeof(ks[0]); a++)
				for (size_t b = 0; b < sizeof(ns) / sizeof(ns[0]); b++) {
					uint32_t k = ks[a], n = ns[b];

					/* padded strides, different for each operand */
					check_product(kernels[ki], m, k, n, k + 3, k + 5, n + 2,
						      &seed);
				}
}

/* Dense strides (ld == width) on a few shapes, and a stride far wider than the row. */
static void test_matmul_dense_and_wide_strides(void **state)
{
	static const enum matmul_kernel kernels[] = { MATMUL_SGEMV, MATMUL_SMALLM, MATMUL_SGEMM,
						      MATMUL_AUTO };
	uint64_t seed = 2;

	(void)state;
	for (size_t ki = 0; ki < sizeof(kernels) / sizeof(kernels[0]); ki++) {
		check_product(kernels[ki], 1, 16, 8, 16, 16, 8, &seed);
		check_product(kernels[ki], 2, 8, 4, 8, 8, 4, &seed);
		check_product(kernels[ki], 25, 33, 9, 33, 33, 9, &seed);
		check_product(kernels[ki], 7, 17, 6, 200, 301, 64, &seed);
		check_product(kernels[ki], 24, 256, 12, 256, 260, 12, &seed);
		check_product(kernels[ki], 48, 40, 40, 41, 40, 41, &seed);
	}
}

/* The small-m kernel called directly, beyond the m it is chosen for. */
static void test_matmul_small_m_direct(void **state)
{
	uint64_t seed = 3;
	const uint32_t m = 37, k = 29, n = 11;
	const size_t ldx = 31, ldw = 30, ldy = 13;
	float *x = malloc(sizeof(float) * m * ldx), *w = malloc(sizeof(float) * n * ldw);
	float *y = malloc(sizeof(float) * m * ldy);

	(void)state;
	assert_true(x && w && y);
	for (size_t i = 0; i < m * ldx; i++)
		x[i] = rng_sym(&seed);
	for (size_t i = 0; i < n * ldw; i++)
		w[i] = rng_sym(&seed);
	matmul_small_m(x, ldx, m, k, w, WEIGHT_F32, ldw, n, y, ldy);
	for (uint32_t r = 0; r < m; r++)
		for (uint32_t c = 0; c < n; c++) {
			double ref = 0;

			for (uint32_t i = 0; i < k; i++)
				ref += (double)x[r * ldx + i] * w[c * ldw + i];
			ASSERT_CLOSE(y[r * ldy + c], ref, 1e-5 * k, 0);
		}
	free(x);
	free(w);
	free(y);
}

/*
 * Every instantiation of the small-m kernel this CPU runs (the one picked
 * at run time hides the others on a given machine), over block edges in m
 * and n, and k across the 2048-float chunk boundary with a tail.
 */
static void test_matmul_small_m_every_variant(void **state)
{
	static const uint32_t ms[] = { 1, 2, 3, 4, 5, 9, 16, 17, 33, 64, 70 };
	static const uint32_t ks[] = { 15, 16, 2048, 2049, 4100 };
	static const uint32_t ns[] = { 1, 4, 7, 9 };
	const char *original = matmul_small_m_variant();
	struct test_variants tv;
	uint64_t seed = 4;

	(void)state;
	test_variants_init(&tv, "small-m kernel");
	for (size_t v = 0; v < tv.n; v++) {
		if (!test_variant_forced(&tv, v, matmul_small_m_force(tv.names[v])))
			continue;
		for (size_t a = 0; a < sizeof(ms) / sizeof(ms[0]); a++)
			for (size_t b = 0; b < sizeof(ks) / sizeof(ks[0]); b++)
				for (size_t c = 0; c < sizeof(ns) / sizeof(ns[0]); c++)
					check_product(MATMUL_SMALLM, ms[a], ks[b], ns[c], ks[b] + 1,
						      ks[b] + 3, ns[c] + 2, &seed);
	}
	ASSERT_ERRNO(matmul_small_m_force("sse9"), EINVAL);
	ASSERT_OK(matmul_small_m_force(original));
	test_variants_done(&tv, original);
}

/* m = 0 or n = 0: nothing is read or written. */
static void test_matmul_empty(void **state)
{
	float y[4] = { SENTINEL, SENTINEL, SENTINEL, SENTINEL };
	const float x[4] = { 1, 2, 3, 4 }, w[4] = { 1, 1, 1, 1 };

	(void)state;
	matmul_xwt(MATMUL_AUTO, x, 4, 0, 4, w, WEIGHT_F32, 4, 1, y, 4);
	matmul_xwt(MATMUL_SGEMM, x, 4, 1, 4, w, WEIGHT_F32, 4, 0, y, 4);
	matmul_xwt(MATMUL_SMALLM, x, 4, 0, 4, w, WEIGHT_F32, 4, 1, y, 4);
	for (int i = 0; i < 4; i++)
		assert_true(y[i] == SENTINEL);
	/* and a 1x1 product is exact */
	matmul_xwt(MATMUL_SMALLM, x, 4, 1, 4, w, WEIGHT_F32, 4, 1, y, 4);
	assert_true(y[0] == 10.0f);
	matmul_xwt(MATMUL_SGEMV, x, 4, 1, 4, w, WEIGHT_F32, 4, 1, y, 4);
	assert_true(y[0] == 10.0f);
}

/*
 * Half-precision weights widened in registers compute exactly what float32
 * weights of the same values do: the small-m kernel gives bitwise the same
 * result for BF16 and F16 as for their float32 widening, in every variant.
 */
static void test_matmul_half_equals_f32_of_same_values(void **state)
{
	const uint32_t m = 9, k = 2100, n = 7;
	const char *original = matmul_small_m_variant();
	struct test_variants tv;
	uint64_t seed = 6;
	float *x = malloc(sizeof(float) * m * k), *w = malloc(sizeof(float) * n * k);
	float *y_f32 = malloc(sizeof(float) * m * n), *y_half = malloc(sizeof(float) * m * n);

	(void)state;
	assert_true(x && w && y_f32 && y_half);
	for (size_t i = 0; i < (size_t)m * k; i++)
		x[i] = rng_sym(&seed);
	test_variants_init(&tv, "small-m kernel (half precision)");
	for (size_t v = 0; v < tv.n; v++) {
		if (!test_variant_forced(&tv, v, matmul_small_m_force(tv.names[v])))
			continue;
		for (size_t d = 1; d < N_WEIGHT_DTYPES; d++) {
			enum weight_dtype dt = weight_dtypes[d];
			void *wt;

			for (size_t i = 0; i < (size_t)n * k; i++)
				w[i] = as_dtype(rng_sym(&seed), dt);
			wt = weights_of(w, (size_t)n * k, dt);
			for (uint32_t mm = 1; mm <= m; mm += 4) {
				matmul_small_m(x, k, mm, k, w, WEIGHT_F32, k, n, y_f32, n);
				matmul_small_m(x, k, mm, k, wt, dt, k, n, y_half, n);
				assert_memory_equal(y_f32, y_half, sizeof(float) * mm * n);
			}
			free(wt);
		}
	}
	ASSERT_OK(matmul_small_m_force(original));
	test_variants_done(&tv, original);
	free(x);
	free(w);
	free(y_f32);
	free(y_half);
}

/*
 * Half-precision weights above the small-m bound go through float32 panels
 * and sgemm: with rows of 70000 a panel holds fewer rows than the tile, so
 * several panels (and a short last one) are multiplied.
 */
static void test_matmul_half_sgemm_panels(void **state)
{
	uint64_t seed = 7;

	(void)state;
	check_product_as(MATMUL_SGEMM, WEIGHT_BF16, 40, 70000, 67, 70000, 70000, 70, &seed);
	check_product_as(MATMUL_SGEMM, WEIGHT_F16, 3, 70000, 31, 70001, 70003, 31, &seed);
}

/* Subnormal, infinite and NaN half values widen to their float32 values, in every variant. */
static void test_matmul_widen_special_values(void **state)
{
	static const uint16_t f16[] = { 0x0001, 0x03ff, 0x8001, 0x7c00, 0xfc00, 0x7e00, 0x3c00,
					0xc000, 0x0400, 0x7bff, 0x0000, 0x8000, 0x1234, 0x5678,
					0x6789, 0x0200, 0x0003 };
	static const uint16_t bf16[] = { 0x0001, 0x7f80, 0xff80, 0x7fc0, 0x3f80, 0xc000, 0x0080,
					 0x7f7f, 0x0000, 0x8000, 0x1234, 0x5678, 0x4049, 0x8001,
					 0x00ff, 0x3e00, 0xbf81 };
	const size_t n = sizeof(f16) / sizeof(f16[0]);
	const char *original = matmul_small_m_variant();
	float got[sizeof(f16) / sizeof(f16[0])], want;
	struct test_variants tv;

	(void)state;
	test_variants_init(&tv, "half-precision widening");
	for (size_t v = 0; v < tv.n; v++) {
		if (!test_variant_forced(&tv, v, matmul_small_m_force(tv.names[v])))
			continue;
		matmul_widen(f16, WEIGHT_F16, n, got);
		for (size_t i = 0; i < n; i++) {
			want = f16_to_f32(f16[i]);
			assert_memory_equal(&got[i], &want, sizeof(float));
		}
		matmul_widen(bf16, WEIGHT_BF16, n, got);
		for (size_t i = 0; i < n; i++) {
			want = bf16_to_f32(bf16[i]);
			assert_memory_equal(&got[i], &want, sizeof(float));
		}
	}
	ASSERT_OK(matmul_small_m_force(original));
	test_variants_done(&tv, original);
}

/* ----------------------------------------------------------- activations */

static const double act_inputs[] = {
	-3e38, -1e10, -1e4, -100, -30, -20, -10, -6, -5, -3, -2, -1.5, -1, -0.7, -0.5, -0.1,
	-1e-3, -1e-7, -0.0, 0, 1e-7, 1e-3, 0.1, 0.5, 0.7, 1, 1.5, 2, 3, 5, 6, 10, 20, 30, 100,
	1e4, 1e10, 3e38,
};
#define N_ACT (sizeof(act_inputs) / sizeof(act_inputs[0]))

static double ref_gelu_erf(double x)
{
	return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

static double ref_gelu_tanh(double x)
{
	return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static double ref_silu(double x)
{
	return x / (1.0 + exp(-x));
}

static double ref_relu(double x)
{
	return x > 0 ? x : 0;
}

/*
 * Float evaluation of these formulas cancels in 1 + erf / 1 + tanh for
 * x < -3, where the result is below 1e-5: an absolute floor of 1e-6 (times
 * the gate) covers that, a relative 1e-5 covers the rest. A result beyond
 * float's range must come out as an infinity of the right sign.
 */
static void expect_act(const char *what, double x, double g, float got, double want)
{
	if (fabs(want) > FLT_MAX) {
		if (!isinf(got) || (got < 0) != (want < 0))
			fail_msg("%s(%g) gate %g = %.9g, expected %.9g (beyond float)", what, x,
				 g, got, want);
		return;
	}
	if (!(fabs(got - want) <= 1e-6 * fmax(1.0, fabs(g)) + 1e-5 * fabs(want)))
		fail_msg("%s(%g) gate %g = %.9g, expected %.9g", what, x, g, got, want);
}

static void check_plain(enum activation a, const char *what, double (*ref)(double))
{
	/* rows of 8 with a stride of 11: padding must stay untouched */
	const size_t cols = 8, ld = 11, rows = (N_ACT + cols - 1) / cols;
	float *h = malloc(sizeof(float) * rows * ld);

	assert_non_null(h);
	for (size_t i = 0; i < rows * ld; i++)
		h[i] = SENTINEL;
	for (size_t i = 0; i < N_ACT; i++)
		h[(i / cols) * ld + i % cols] = (float)act_inputs[i];
	/* the last row may be short: fill with zeros */
	for (size_t i = N_ACT; i < rows * cols; i++)
		h[(i / cols) * ld + i % cols] = 0;
	activation_apply(a, h, ld, NULL, 0, rows, cols);
	for (size_t i = 0; i < N_ACT; i++) {
		double x = (float)act_inputs[i];

		expect_act(what, x, 1, h[(i / cols) * ld + i % cols], ref(x));
	}
	for (size_t r = 0; r < rows; r++)
		for (size_t c = cols; c < ld; c++)
			assert_true(h[r * ld + c] == SENTINEL);
	free(h);
}

static void test_act_relu(void **state)
{
	(void)state;
	check_plain(ACT_RELU, "relu", ref_relu);
}

static void test_act_gelu_erf(void **state)
{
	(void)state;
	check_plain(ACT_GELU, "gelu", ref_gelu_erf);
	/* the two GELU forms are different functions: at x = 1 they differ by ~1.6e-4 */
	assert_true(fabs(ref_gelu_erf(1) - ref_gelu_tanh(1)) > 1e-4);
}

static void test_act_gelu_tanh(void **state)
{
	(void)state;
	check_plain(ACT_GELU_TANH, "gelu_tanh", ref_gelu_tanh);
}

static void check_gated(enum activation a, const char *what, double (*ref)(double))
{
	static const double gates[] = { 1, -2.5, 0.5, 0, 1e3 };
	const size_t cols = N_ACT, ld1 = N_ACT + 3, ld3 = N_ACT + 6;
	const size_t rows = sizeof(gates) / sizeof(gates[0]);
	float *h1 = malloc(sizeof(float) * rows * ld1), *h3 = malloc(sizeof(float) * rows * ld3);

	assert_true(h1 && h3);
	for (size_t r = 0; r < rows; r++) {
		for (size_t c = 0; c < ld1; c++)
			h1[r * ld1 + c] = c < cols ? (float)act_inputs[c] : SENTINEL;
		for (size_t c = 0; c < ld3; c++)
			h3[r * ld3 + c] = c < cols ? (float)gates[r] : NAN;
	}
	activation_apply(a, h1, ld1, h3, ld3, rows, cols);
	for (size_t r = 0; r < rows; r++) {
		for (size_t c = 0; c < cols; c++) {
			double x = (float)act_inputs[c], want = ref(x) * gates[r];

			/* act(x) * 0 is 0 for every finite act(x) */
			expect_act(what, x, gates[r], h1[r * ld1 + c], want);
		}
		for (size_t c = cols; c < ld1; c++)
			assert_true(h1[r * ld1 + c] == SENTINEL);
	}
	free(h1);
	free(h3);
}

static void test_act_silu_gated(void **state)
{
	(void)state;
	check_gated(ACT_SILU_GATED, "silu_gated", ref_silu);
	assert_true(activation_is_gated(ACT_SILU_GATED));
	assert_true(activation_is_gated(ACT_GELU_GATED));
	assert_false(activation_is_gated(ACT_RELU));
	assert_false(activation_is_gated(ACT_GELU));
	assert_false(activation_is_gated(ACT_GELU_TANH));
}

static void test_act_gelu_gated(void **state)
{
	(void)state;
	check_gated(ACT_GELU_GATED, "gelu_gated", ref_gelu_erf);
}

static int setup(void **state)
{
	struct blas_info info;

	(void)state;
	/* the engine's configuration: OpenBLAS on one thread */
	return blas_setup_single_thread(&info) < 0 ? -1 : 0;
}

/* A generic OpenBLAS core on a CPU that has AVX2 or AVX-512 is named, with its fix. */
static void test_blas_core_advice(void **state)
{
	char buf[200];

	(void)state;
	blas_core_advice("Prescott", true, true, buf, sizeof(buf));
	assert_non_null(strstr(buf, "Prescott"));
	assert_non_null(strstr(buf, "OPENBLAS_CORETYPE=SkylakeX"));
	blas_core_advice("Prescott", true, false, buf, sizeof(buf));
	assert_non_null(strstr(buf, "OPENBLAS_CORETYPE=Haswell"));
	blas_core_advice("sandybridge", true, false, buf, sizeof(buf));
	assert_non_null(strstr(buf, "sandybridge"));
	/* the right core, or a CPU without AVX2: nothing to say */
	blas_core_advice("Haswell", true, false, buf, sizeof(buf));
	assert_string_equal(buf, "");
	blas_core_advice("SkylakeX", true, true, buf, sizeof(buf));
	assert_string_equal(buf, "");
	blas_core_advice("Zen", true, false, buf, sizeof(buf));
	assert_string_equal(buf, "");
	blas_core_advice("Prescott", false, false, buf, sizeof(buf));
	assert_string_equal(buf, "");
	blas_core_advice(NULL, true, true, buf, sizeof(buf));
	assert_string_equal(buf, "");
}

/*
 * The engine's programs load OpenBLAS's serial build from the folder their
 * RUNPATH names (cmake/MoedOpenBLAS.cmake), whichever build the system's
 * libopenblas.so.0 is; moed refuses a threaded build and names its file.
 */
static void test_blas_serial(void **state)
{
	struct blas_info info, threaded;
	char dir[PATH_MAX], why[512];

	(void)state;
	blas_info_get(&info);
	print_message("OpenBLAS: %s build from %s\n", blas_parallel_name(info.parallel),
		      info.library);
	ASSERT_EQ(info.parallel, 0);
	assert_true(info.buffers_locked);
	ASSERT_OK(blas_serial_check(&info, why, sizeof(why)));
	assert_string_equal(why, "");
	assert_non_null(realpath(MOE_OPENBLAS_SERIAL_DIR, dir));
	strcat(dir, "/");
	assert_true(strncmp(info.library, dir, strlen(dir)) == 0);

	threaded = info;
	threaded.parallel = 1;
	snprintf(threaded.library, sizeof(threaded.library), "/x/openblas-pthread/libopenblasp.so");
	ASSERT_ERRNO(blas_serial_check(&threaded, why, sizeof(why)), EOPNOTSUPP);
	assert_non_null(strstr(why, "loaded from /x/openblas-pthread/libopenblasp.so is its "
				    "pthreads build"));
	threaded.parallel = 2;
	ASSERT_ERRNO(blas_serial_check(&threaded, why, sizeof(why)), EOPNOTSUPP);
	assert_non_null(strstr(why, "its OpenMP build"));
	/* serial, but bound to itself: its buffer calls miss the lock */
	threaded.parallel = 0;
	threaded.buffers_locked = false;
	ASSERT_ERRNO(blas_serial_check(&threaded, why, sizeof(why)), ENOLCK);
	assert_non_null(strstr(why, "takes its work buffers without moed's lock"));
	assert_string_equal(blas_parallel_name(0), "serial");
	assert_string_equal(blas_parallel_name(7), "unknown");
}

/* Small enough to call often (the race is in taking a buffer), above the small-matrix path. */
enum { RACE_M = 32, RACE_N = 128, RACE_K = 256, RACE_THREADS = 4, RACE_CALLS = 4000 };

struct blas_race {
	const float *a, *b, *want;
	atomic_uint wrong;
};

static void *blas_race_thread(void *arg)
{
	struct blas_race *race = arg;
	float *c = malloc(sizeof(float) * RACE_M * RACE_N);

	for (unsigned i = 0; c && i < RACE_CALLS; i++) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, RACE_M, RACE_N, RACE_K, 1.0f,
			    race->a, RACE_K, race->b, RACE_K, 0.0f, c, RACE_N);
		if (memcmp(c, race->want, sizeof(float) * RACE_M * RACE_N) != 0)
			atomic_fetch_add(&race->wrong, 1);
	}
	if (!c)
		atomic_fetch_add(&race->wrong, RACE_CALLS);
	free(c);
	return NULL;
}

/* The engine's workers call OpenBLAS at once: every result as one thread's, to the bit. */
static void test_blas_concurrent_sgemm(void **state)
{
	static float a[RACE_M * RACE_K], b[RACE_N * RACE_K], want[RACE_M * RACE_N];
	struct blas_race race = { .a = a, .b = b, .want = want };
	pthread_t t[RACE_THREADS];
	struct blas_info info;
	uint64_t rng = 12;

	(void)state;
	blas_info_get(&info);
	assert_true(info.buffers_locked);
	for (size_t i = 0; i < RACE_M * RACE_K; i++)
		a[i] = rng_sym(&rng);
	for (size_t i = 0; i < RACE_N * RACE_K; i++)
		b[i] = rng_sym(&rng);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, RACE_M, RACE_N, RACE_K, 1.0f, a,
		    RACE_K, b, RACE_K, 0.0f, want, RACE_N);
	for (unsigned i = 0; i < RACE_THREADS; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, blas_race_thread, &race), 0);
	for (unsigned i = 0; i < RACE_THREADS; i++)
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
	ASSERT_EQ(atomic_load(&race.wrong), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matmul_grid),
		cmocka_unit_test(test_matmul_dense_and_wide_strides),
		cmocka_unit_test(test_matmul_small_m_direct),
		cmocka_unit_test(test_matmul_small_m_every_variant),
		cmocka_unit_test(test_matmul_empty),
		cmocka_unit_test(test_matmul_half_equals_f32_of_same_values),
		cmocka_unit_test(test_matmul_half_sgemm_panels),
		cmocka_unit_test(test_matmul_widen_special_values),
		cmocka_unit_test(test_act_relu),
		cmocka_unit_test(test_act_gelu_erf),
		cmocka_unit_test(test_act_gelu_tanh),
		cmocka_unit_test(test_act_silu_gated),
		cmocka_unit_test(test_act_gelu_gated),
		cmocka_unit_test(test_blas_core_advice),
		cmocka_unit_test(test_blas_serial),
		cmocka_unit_test(test_blas_concurrent_sgemm),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
