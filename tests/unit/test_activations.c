/* SPDX-License-Identifier: MIT */
/*
 * Tests of activation_apply's instantiations (avx512 and avx2 through
 * libmvec, generic through scalar libm): every one this CPU runs, against
 * the same formulas in double, over a sweep of 86 041 inputs (a dense grid
 * over [-20, 20], float bit patterns spread over every exponent, so
 * denormals and the largest floats, and ±0, ±inf, NaN), plain and gated;
 * and every row length from 0 to three 16-float vectors and a tail, with
 * row strides wider than the rows, so that a tail or stride bug shows. The
 * test prints the largest error it saw per variant, as a fraction of:
 *
 *   |got - want| <= ACT_ATOL * max(1, |g|) + ACT_RTOL * |want|
 *
 * for got = act(x) * g against want in double. ACT_RTOL is about 17 ulp of
 * the float result; the worst seen is 0.14 of the bound in every variant
 * (SiLU gated by 1000, about 2 ulp). ACT_ATOL is for the GELUs below about
 * x = -3.5, where 1 + erf(x/√2) cancels: one ulp of erff near -1 (6e-8) is tiny against 1
 * but not against the difference. There libmvec's AVX-512 erff reaches -1
 * sooner than scalar erff (gelu(-5.17) = -0 for -6.1e-7, 0.61 of the
 * bound; AVX2 0.14, scalar 0.08). Both sit far inside the golden cases'
 * 1e-3. Beyond the float range the result must be inf of the right sign,
 * and NaN where double says NaN (NaN in; -inf in SiLU and the GELUs, as
 * -inf * 0).
 */
#include "test_assert.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compute/activations.h"
#include "test_cpu.h"

#define ACT_RTOL 1e-6
#define ACT_ATOL 1e-6

/* padding after each row of h1: a write there is a stride or tail bug */
#define SENTINEL 12345.0f

struct act_case {
	enum activation a;
	const char *name;
	double (*ref)(double x);
};

static double ref_relu(double x)
{
	return x < 0 ? 0 : x; /* NaN stays NaN */
}

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

static const struct act_case cases[] = {
	{ ACT_RELU, "relu", ref_relu },
	{ ACT_GELU, "gelu", ref_gelu_erf },
	{ ACT_GELU_TANH, "gelu_tanh", ref_gelu_tanh },
	{ ACT_SILU_GATED, "silu_gated", ref_silu },
	{ ACT_GELU_GATED, "gelu_gated", ref_gelu_erf },
};

#define N_CASES (sizeof(cases) / sizeof(cases[0]))

/* gates for the gated cases: signs, 0, -0, large, a denormal */
static const float gates[] = { 1, -2.5f, 0.5f, 0, -0.0f, 1e3f, 1e-40f };

#define N_GATES (sizeof(gates) / sizeof(gates[0]))

static float float_from_bits(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/* The sweep of inputs; *ret_n gets their count. */
static float *inputs_make(size_t *ret_n)
{
	static const float special[] = {
		0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MIN, -FLT_MIN, 1e-45f, -1e-45f,
		1e-40f, -1e-40f, FLT_MAX, -FLT_MAX, 88.7f, -88.7f, 89.0f, -89.0f, 103.9f,
		-103.9f, 4.0e12f, -4.0e12f, 1e13f, -1e13f,
	};
	const size_t n_grid = 40 * 512 + 1, n_bits = 65536;
	const size_t n_special = sizeof(special) / sizeof(special[0]);
	size_t n = 0;
	float *x = malloc(sizeof(float) * (n_grid + n_bits + n_special));

	assert_non_null(x);
	for (size_t i = 0; i < n_grid; i++)
		x[n++] = -20.0f + (float)i / 512.0f;
	/* stride 65537 over all 2^32 patterns: every exponent, both signs, NaNs */
	for (size_t i = 0; i < n_bits; i++)
		x[n++] = float_from_bits((uint32_t)(i * 65537u));
	for (size_t i = 0; i < n_special; i++)
		x[n++] = special[i];
	*ret_n = n;
	return x;
}

struct act_err {
	double worst;    /* largest |got - want| / bound */
	double worst_x;  /* its input */
	double worst_g;  /* and gate */
};

/* Checks one result; folds its error into *err. */
static void expect_act(const char *variant, const struct act_case *c, float x, float g, float got,
		       struct act_err *err)
{
	double want = c->ref(x) * (activation_is_gated(c->a) ? g : 1);
	double bound, e;

	if (isnan(want)) {
		if (!isnan(got))
			fail_msg("%s %s(%g) gate %g = %.9g, expected NaN", variant, c->name, x, g,
				 got);
		return;
	}
	if (fabs(want) > FLT_MAX) {
		if (!isinf(got) || (got < 0) != (want < 0))
			fail_msg("%s %s(%g) gate %g = %.9g, expected %.9g (beyond float)",
				 variant, c->name, x, g, got, want);
		return;
	}
	bound = ACT_ATOL * fmax(1.0, fabs(g)) + ACT_RTOL * fabs(want);
	e = fabs(got - want);
	if (!(e <= bound))
		fail_msg("%s %s(%.9g) gate %g = %.9g, expected %.9g (error %.3g, bound %.3g)",
			 variant, c->name, x, g, got, want, e, bound);
	if (e / bound > err->worst) {
		err->worst = e / bound;
		err->worst_x = x;
		err->worst_g = g;
	}
}

/*
 * The whole sweep through one case, as rows of an odd length (not a
 * multiple of any vector width) with strides wider than the rows; gated
 * cases once per gate.
 */
static void check_sweep(const char *variant, const struct act_case *c, const float *x, size_t n)
{
	const size_t cols = 1021, ld1 = 1027, ld3 = 1030, rows = (n + cols - 1) / cols;
	const size_t n_gates = activation_is_gated(c->a) ? N_GATES : 1;
	float *h1 = malloc(sizeof(float) * rows * ld1), *h3 = malloc(sizeof(float) * rows * ld3);
	struct act_err err = { 0 };

	assert_true(h1 && h3);
	for (size_t k = 0; k < n_gates; k++) {
		for (size_t i = 0; i < rows * ld1; i++)
			h1[i] = SENTINEL;
		for (size_t i = 0; i < rows * ld3; i++)
			h3[i] = NAN; /* read only if a padding slot of h1 is written */
		for (size_t i = 0; i < rows * cols; i++) {
			/* the last row's leftover columns repeat the start */
			h1[(i / cols) * ld1 + i % cols] = x[i % n];
			h3[(i / cols) * ld3 + i % cols] = gates[k];
		}
		activation_apply(c->a, h1, ld1, activation_is_gated(c->a) ? h3 : NULL, ld3, rows,
				 cols);
		for (size_t i = 0; i < rows * cols; i++)
			expect_act(variant, c, x[i % n], gates[k], h1[(i / cols) * ld1 + i % cols],
				   &err);
		for (size_t r = 0; r < rows; r++)
			for (size_t j = cols; j < ld1; j++)
				assert_true(h1[r * ld1 + j] == SENTINEL);
	}
	printf("  %-7s %-10s worst error %.3f of the bound (x = %.9g, gate %g)\n", variant,
	       c->name, err.worst, err.worst_x, err.worst_g);
	free(h1);
	free(h3);
}

/*
 * Every row length from 0 to three 16-float vectors and a tail, 3 rows,
 * with row strides 1 and 5 wider: each element is computed, none after
 * the row is touched.
 */
static void check_tails(const char *variant, const struct act_case *c)
{
	const size_t rows = 3, max_cols = 3 * 16 + 1;
	float *h1 = malloc(sizeof(float) * rows * (max_cols + 5));
	float *h3 = malloc(sizeof(float) * rows * (max_cols + 5));
	struct act_err err = { 0 };

	assert_true(h1 && h3);
	for (size_t cols = 0; cols <= max_cols; cols++) {
		for (size_t pad = 1; pad <= 5; pad += 4) {
			const size_t ld1 = cols + pad, ld3 = cols + 5 - pad + 1;
			const float g = -1.5f;

			for (size_t i = 0; i < rows * ld1; i++)
				h1[i] = SENTINEL;
			for (size_t i = 0; i < rows * ld3; i++)
				h3[i] = NAN;
			for (size_t r = 0; r < rows; r++)
				for (size_t j = 0; j < cols; j++) {
					h1[r * ld1 + j] = -6.0f + 0.37f * (float)(r * cols + j);
					h3[r * ld3 + j] = g;
				}
			activation_apply(c->a, h1, ld1, activation_is_gated(c->a) ? h3 : NULL, ld3,
					 rows, cols);
			for (size_t r = 0; r < rows; r++) {
				for (size_t j = 0; j < cols; j++)
					expect_act(variant, c, -6.0f + 0.37f * (float)(r * cols + j),
						   g, h1[r * ld1 + j], &err);
				for (size_t j = cols; j < ld1; j++)
					if (h1[r * ld1 + j] != SENTINEL)
						fail_msg("%s %s: cols %zu ld %zu wrote column %zu "
							 "of row %zu",
							 variant, c->name, cols, ld1, j, r);
			}
		}
	}
	free(h1);
	free(h3);
}

static void test_every_variant(void **state)
{
	const char *original = activation_variant();
	struct test_variants tv;
	size_t n;
	float *x = inputs_make(&n);

	(void)state;
	printf("bound: |got - want| <= %g * max(1, |gate|) + %g * |want|, over %zu inputs\n",
	       ACT_ATOL, ACT_RTOL, n);
	test_variants_init(&tv, "activation");
	for (size_t v = 0; v < tv.n; v++) {
		if (!test_variant_forced(&tv, v, activation_variant_force(tv.names[v])))
			continue;
		assert_string_equal(activation_variant(), tv.names[v]);
		for (size_t c = 0; c < N_CASES; c++) {
			check_sweep(tv.names[v], &cases[c], x, n);
			check_tails(tv.names[v], &cases[c]);
		}
	}
	ASSERT_ERRNO(activation_variant_force("sse9"), EINVAL);
	ASSERT_OK(activation_variant_force(original));
	test_variants_done(&tv, original);
	free(x);
}

/* rows = 0 or cols = 0: nothing is read or written, in every variant. */
static void test_empty(void **state)
{
	static const char *const names[] = { "avx512", "avx2", "generic" };
	const char *original = activation_variant();
	float h = SENTINEL;

	(void)state;
	for (size_t v = 0; v < sizeof(names) / sizeof(names[0]); v++) {
		if (activation_variant_force(names[v]) != 0)
			continue;
		for (size_t c = 0; c < N_CASES; c++) {
			activation_apply(cases[c].a, &h, 1, activation_is_gated(cases[c].a) ? &h : NULL,
					 1, 0, 1);
			activation_apply(cases[c].a, &h, 1, activation_is_gated(cases[c].a) ? &h : NULL,
					 1, 1, 0);
			assert_true(h == SENTINEL);
		}
	}
	ASSERT_OK(activation_variant_force(original));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_variant),
		cmocka_unit_test(test_empty),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
