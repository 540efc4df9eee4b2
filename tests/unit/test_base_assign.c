/* SPDX-License-Identifier: MIT */
/*
 * Tests of the BASE balanced assignment: seeded random instances against an
 * exact Hungarian solver on the slot-expanded matrix (T rows, E * capacity
 * columns), larger instances against an exact optimality certificate (no
 * improving cycle of token moves between experts), the degenerate shapes
 * (one expert, one token, equal affinities, huge spreads, duplicate rows),
 * determinism, and the refusals with the output left untouched.
 */
#include "test_assert.h"

#include <errno.h>
#include <float.h>
#include <stdbool.h>
#include <stdlib.h>

#include "router/base_assign.h"
#include "util/rng.h"

/* base_assign_balanced() with a scratch of its own, freed after every call
 * (under ASan a read past the working set then shows). */
static int assign(const float *affinity, uint32_t n_tokens, uint32_t n_experts,
		  uint32_t capacity, int32_t *ret_expert)
{
	struct scratch s = { 0 };
	int r = base_assign_balanced(affinity, n_tokens, n_experts, capacity, &s, ret_expert);

	scratch_done(&s);
	return r;
}

/* ---------------------------------------------------------------- helpers */

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *state)
{
	return (double)(rng_splitmix64(state) >> 11) * 0x1p-53;
}

static double rng_normal(uint64_t *state)
{
	double u = 1.0 - rng_unit(state), v = rng_unit(state);

	return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

enum dist {
	DIST_NORMAL,  /* router logits */
	DIST_INTEGER, /* 0..3: many ties and many optimal assignments */
	DIST_SKEWED,  /* every token prefers expert 0: capacity binds hard */
};

static float *affinity_random(uint32_t n_tokens, uint32_t n_experts, enum dist dist,
			      uint64_t seed)
{
	size_t n = (size_t)n_tokens * n_experts;
	float *a = malloc(sizeof(*a) * n);
	uint64_t st = seed;

	assert_non_null(a);
	for (size_t i = 0; i < n; i++) {
		switch (dist) {
		case DIST_NORMAL:
			a[i] = (float)rng_normal(&st);
			break;
		case DIST_INTEGER:
			a[i] = (float)(rng_splitmix64(&st) % 4);
			break;
		case DIST_SKEWED:
			a[i] = (float)(rng_normal(&st) + (i % n_experts == 0 ? 3.0 : 0.0));
			break;
		}
	}
	return a;
}

static double affinity_range(const float *a, uint32_t n_tokens, uint32_t n_experts)
{
	double lo = INFINITY, hi = -INFINITY;

	for (size_t i = 0; i < (size_t)n_tokens * n_experts; i++) {
		lo = fmin(lo, a[i]);
		hi = fmax(hi, a[i]);
	}
	return hi - lo;
}

/*
 * Exact maximum of the slot-expanded assignment problem: Hungarian method
 * with potentials (Kuhn-Munkres in the O(n^2 m) form for n rows <= m
 * columns), minimising -affinity. Column j is a slot of expert j / capacity.
 */
static double exact_optimum(const float *a, uint32_t n_tokens, uint32_t n_experts,
			    uint32_t capacity)
{
	uint32_t n = n_tokens, m = n_experts * capacity;
	double *u = calloc(n + 1, sizeof(*u)), *v = calloc(m + 1, sizeof(*v));
	double *minv = malloc(sizeof(*minv) * (m + 1));
	uint32_t *p = calloc(m + 1, sizeof(*p)), *way = calloc(m + 1, sizeof(*way));
	bool *used = malloc(sizeof(*used) * (m + 1));
	double total = 0;

	assert_true(u && v && minv && p && way && used);
	assert_true(n <= m);
	for (uint32_t i = 1; i <= n; i++) {
		uint32_t j0 = 0;

		p[0] = i;
		for (uint32_t j = 0; j <= m; j++) {
			minv[j] = INFINITY;
			used[j] = false;
		}
		do {
			uint32_t i0 = p[j0], j1 = 0;
			double delta = INFINITY;

			used[j0] = true;
			for (uint32_t j = 1; j <= m; j++) {
				double cur;

				if (used[j])
					continue;
				cur = -(double)a[(size_t)(i0 - 1) * n_experts + (j - 1) / capacity] -
				      u[i0] - v[j];
				if (cur < minv[j]) {
					minv[j] = cur;
					way[j] = j0;
				}
				if (minv[j] < delta) {
					delta = minv[j];
					j1 = j;
				}
			}
			for (uint32_t j = 0; j <= m; j++) {
				if (used[j]) {
					u[p[j]] += delta;
					v[j] -= delta;
				} else {
					minv[j] -= delta;
				}
			}
			j0 = j1;
		} while (p[j0] != 0);
		do {
			uint32_t j1 = way[j0];

			p[j0] = p[j1];
			j0 = j1;
		} while (j0);
	}
	for (uint32_t j = 1; j <= m; j++)
		if (p[j])
			total += a[(size_t)(p[j] - 1) * n_experts + (j - 1) / capacity];
	free(used);
	free(way);
	free(p);
	free(minv);
	free(v);
	free(u);
	return total;
}

/* Every token on a real expert, no expert over capacity; returns the total. */
static double assignment_check(const float *a, uint32_t n_tokens, uint32_t n_experts,
			       uint32_t capacity, const int32_t *expert)
{
	uint32_t *load = calloc(n_experts, sizeof(*load));
	double total = 0;

	assert_non_null(load);
	for (uint32_t t = 0; t < n_tokens; t++) {
		if (expert[t] < 0 || (uint32_t)expert[t] >= n_experts)
			fail_msg("token %u on expert %d of %u", t, expert[t], n_experts);
		load[expert[t]]++;
		total += a[(size_t)t * n_experts + (uint32_t)expert[t]];
	}
	for (uint32_t e = 0; e < n_experts; e++) {
		if (load[e] > capacity)
			fail_msg("expert %u takes %u tokens, capacity %u", e, load[e], capacity);
		/* Exact balance is forced when the slots are exactly enough. */
		if ((uint64_t)capacity * n_experts == n_tokens)
			ASSERT_EQ(load[e], capacity);
	}
	free(load);
	return total;
}

/*
 * Exact optimality certificate for the transportation problem: no cycle of
 * token moves between experts gains more than @tol. Edge e1 -> e2 carries
 * the best gain of moving one token of e1 to e2; an expert with a free slot
 * gets a 0-gain edge to every expert, which closes a chain of moves that
 * ends in it. Floyd-Warshall on max-gain then finds any positive cycle.
 */
static void assert_no_improving_cycle(const float *a, uint32_t n_tokens, uint32_t n_experts,
				      uint32_t capacity, const int32_t *expert, double tol)
{
	double *g = malloc(sizeof(*g) * n_experts * n_experts);
	uint32_t *load = calloc(n_experts, sizeof(*load));

	assert_true(g && load);
	for (uint32_t i = 0; i < n_experts * n_experts; i++)
		g[i] = -INFINITY;
	for (uint32_t t = 0; t < n_tokens; t++) {
		uint32_t from = (uint32_t)expert[t];
		const float *row = a + (size_t)t * n_experts;

		load[from]++;
		for (uint32_t to = 0; to < n_experts; to++) {
			if (to == from)
				continue;
			g[from * n_experts + to] =
				fmax(g[from * n_experts + to], (double)row[to] - row[from]);
		}
	}
	for (uint32_t f = 0; f < n_experts; f++)
		if (load[f] < capacity)
			for (uint32_t e = 0; e < n_experts; e++)
				if (e != f)
					g[f * n_experts + e] = fmax(g[f * n_experts + e], 0);
	for (uint32_t k = 0; k < n_experts; k++)
		for (uint32_t i = 0; i < n_experts; i++)
			for (uint32_t j = 0; j < n_experts; j++)
				g[i * n_experts + j] =
					fmax(g[i * n_experts + j],
					     g[i * n_experts + k] + g[k * n_experts + j]);
	for (uint32_t i = 0; i < n_experts; i++)
		if (g[i * n_experts + i] > tol)
			fail_msg("improving moves through expert %u: a closed walk gains %.9g > %.3g",
				 i, g[i * n_experts + i], tol);
	free(load);
	free(g);
}

/*
 * Solve, check feasibility and the optimum, and check that a second run
 * gives the same assignment bit for bit.
 */
static void solve_and_compare(const float *a, uint32_t n_tokens, uint32_t n_experts,
			      uint32_t capacity)
{
	int32_t *expert = malloc(sizeof(*expert) * n_tokens);
	int32_t *again = malloc(sizeof(*again) * n_tokens);
	double total, opt, range;

	assert_true(expert && again);
	ASSERT_OK(assign(a, n_tokens, n_experts, capacity, expert));
	total = assignment_check(a, n_tokens, n_experts, capacity, expert);
	opt = exact_optimum(a, n_tokens, n_experts, capacity);
	range = affinity_range(a, n_tokens, n_experts);
	/* The auction's gap bound is 1e-9 of the range: the totals agree to
	 * the rounding of the two summations. */
	ASSERT_CLOSE(total, opt, 1e-9 * (range + 1.0) * n_tokens, 1e-6);
	if (total > opt + 1e-9 * (range + 1.0) * n_tokens)
		fail_msg("T=%u E=%u cap=%u: total %.9g beats the exact optimum %.9g", n_tokens,
			 n_experts, capacity, total, opt);

	ASSERT_OK(assign(a, n_tokens, n_experts, capacity, again));
	assert_memory_equal(expert, again, sizeof(*expert) * n_tokens);
	free(again);
	free(expert);
}

/* ---------------------------------------------------------------- tests */

/* The grid of the BASE shapes, tight (T/E) and loose capacity, three value
 * distributions, against the exact solver. */
static void test_random_vs_exact(void **state)
{
	static const uint32_t tokens[] = { 8, 64, 128, 256 };
	static const uint32_t experts[] = { 2, 4, 8, 16 };

	(void)state;
	for (unsigned ti = 0; ti < 4; ti++) {
		for (unsigned ei = 0; ei < 4; ei++) {
			uint32_t t = tokens[ti], e = experts[ei];
			uint32_t tight = (t + e - 1) / e;
			uint32_t caps[2] = { tight, tight + tight / 2 + 1 };
			unsigned n_seeds = t <= 64 ? 4 : 1;

			for (unsigned ci = 0; ci < 2; ci++) {
				for (unsigned d = DIST_NORMAL; d <= DIST_SKEWED; d++) {
					for (unsigned s = 0; s < n_seeds; s++) {
						uint64_t seed = 1000003ull * t + 10007ull * e +
								101ull * ci + 11ull * d + s;
						float *a = affinity_random(t, e, d, seed);

						solve_and_compare(a, t, e, caps[ci]);
						free(a);
					}
				}
			}
		}
	}
}

/* Many small shapes of every kind: odd T, E not dividing T, capacities from
 * tight to loose, and values with heavy ties (0..2) or full spread. */
static void test_small_sweep(void **state)
{
	uint64_t st = 2021;

	(void)state;
	for (unsigned it = 0; it < 2000; it++) {
		uint32_t e = 2 + (uint32_t)(rng_splitmix64(&st) % 7), t = 2 + (uint32_t)(rng_splitmix64(&st) % 40);
		uint32_t tight = (t + e - 1) / e;
		uint32_t cap = tight + (rng_splitmix64(&st) % 2 ? (uint32_t)(rng_splitmix64(&st) % (tight + 1)) : 0);
		unsigned kind = (unsigned)(rng_splitmix64(&st) % 3);
		float *a = affinity_random(t, e, DIST_NORMAL, rng_splitmix64(&st));

		for (uint32_t i = 0; kind && i < t * e; i++)
			a[i] = kind == 1 ? (float)(rng_splitmix64(&st) % 3) : (float)(rng_splitmix64(&st) % 1000);
		solve_and_compare(a, t, e, cap);
		free(a);
	}
}

/* Shapes too large for the Hungarian oracle in a unit test: the cycle
 * certificate instead, which is exact for this problem. */
static void test_large_optimal(void **state)
{
	static const struct {
		uint32_t t, e, cap;
		enum dist dist;
	} cases[] = {
		{ 1024, 64, 16, DIST_NORMAL },  { 1024, 64, 16, DIST_INTEGER },
		{ 4096, 8, 512, DIST_NORMAL },  { 1024, 16, 80, DIST_SKEWED },
		{ 512, 8, 64, DIST_NORMAL },
	};

	(void)state;
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint32_t t = cases[i].t, e = cases[i].e, cap = cases[i].cap;
		float *a = affinity_random(t, e, cases[i].dist, 77 + i);
		int32_t *expert = malloc(sizeof(*expert) * t);

		assert_non_null(expert);
		ASSERT_OK(assign(a, t, e, cap, expert));
		assignment_check(a, t, e, cap, expert);
		assert_no_improving_cycle(a, t, e, cap, expert,
					  1e-7 * affinity_range(a, t, e));
		free(expert);
		free(a);
	}
}

static void test_one_expert(void **state)
{
	float a[5] = { 0.5f, -1.0f, 3.0f, 2.0f, 0.0f };
	int32_t expert[5] = { -7, -7, -7, -7, -7 };

	(void)state;
	ASSERT_OK(assign(a, 5, 1, 5, expert));
	for (unsigned t = 0; t < 5; t++)
		ASSERT_EQ(expert[t], 0);
	ASSERT_OK(assign(a, 5, 1, 100, expert));
	for (unsigned t = 0; t < 5; t++)
		ASSERT_EQ(expert[t], 0);
}

static void test_one_token(void **state)
{
	float a[4] = { 0.5f, 2.0f, -1.0f, 2.0f };
	int32_t expert = -7;

	(void)state;
	ASSERT_OK(assign(a, 1, 4, 1, &expert));
	/* The tie between experts 1 and 3 goes to the lower index. */
	ASSERT_EQ(expert, 1);
}

/* Every assignment is optimal; capacity must still hold exactly. */
static void test_equal_affinities(void **state)
{
	float a[64 * 8];
	int32_t expert[64];

	(void)state;
	for (unsigned i = 0; i < 64 * 8; i++)
		a[i] = 0.25f;
	ASSERT_OK(assign(a, 64, 8, 8, expert));
	ASSERT_CLOSE(assignment_check(a, 64, 8, 8, expert), 16.0, 0, 0);
	ASSERT_OK(assign(a, 60, 8, 9, expert));
	ASSERT_CLOSE(assignment_check(a, 60, 8, 9, expert), 15.0, 0, 0);
	/* Equal but for one entry: the auction runs on a range of one ulp-ish
	 * difference and must still terminate with an exact answer. */
	a[17] = 0.2500001f;
	solve_and_compare(a, 64, 8, 8);
}

/* 1e6 next to 1e-6, values far from 0 with small differences, and the
 * extremes of float. */
static void test_huge_spread(void **state)
{
	uint32_t t = 64, e = 8;
	float *a = malloc(sizeof(*a) * t * e);
	uint64_t st = 42;

	(void)state;
	assert_non_null(a);
	for (uint32_t i = 0; i < t * e; i++) {
		uint64_t r = rng_splitmix64(&st) % 3;

		a[i] = r == 0 ? 1e6f : r == 1 ? 1e-6f : (float)(rng_unit(&st) * 1e-6);
	}
	solve_and_compare(a, t, e, t / e);
	solve_and_compare(a, t, e, t / e + 3);
	for (uint32_t i = 0; i < t * e; i++)
		a[i] = (float)(1000.0 + rng_unit(&st) * 1e-2);
	solve_and_compare(a, t, e, t / e);
	for (uint32_t i = 0; i < t * e; i++)
		a[i] = (float)(i % e == 3 ? 1e6 : rng_normal(&st) * 1e-6);
	solve_and_compare(a, t, e, t / e);
	/* The ends of float: the range is near 2 * FLT_MAX, or a few
	 * subnormals; the double arithmetic inside must cope with both. */
	for (uint32_t i = 0; i < t * e; i++)
		a[i] = (float)((double)(rng_splitmix64(&st) % 3) - 1.0) * FLT_MAX;
	solve_and_compare(a, t, e, t / e);
	for (uint32_t i = 0; i < t * e; i++)
		a[i] = (float)(rng_splitmix64(&st) % 3) * FLT_TRUE_MIN;
	solve_and_compare(a, t, e, t / e);
	free(a);
}

/* Identical bidders are the auction's worst case (a price war among similar
 * persons); all rows equal, and rows repeated in pairs. */
static void test_duplicate_rows(void **state)
{
	uint32_t t = 128, e = 8;
	float *a = affinity_random(t, e, DIST_NORMAL, 9);

	(void)state;
	for (uint32_t r = 1; r < t; r++)
		memcpy(a + (size_t)r * e, a, sizeof(*a) * e);
	solve_and_compare(a, t, e, t / e);
	solve_and_compare(a, t, e, t / e + 5);
	solve_and_compare(a, t, e, t);
	free(a);

	a = affinity_random(t, e, DIST_INTEGER, 10);
	for (uint32_t r = 1; r < t; r += 2)
		memcpy(a + (size_t)r * e, a + (size_t)(r - 1) * e, sizeof(*a) * e);
	solve_and_compare(a, t, e, t / e);
	solve_and_compare(a, t, e, t / e + 1);
	free(a);
}

/* Capacity so loose that nothing binds: every token takes its argmax. */
static void test_loose_capacity(void **state)
{
	uint32_t t = 64, e = 4;
	float *a = affinity_random(t, e, DIST_SKEWED, 5);
	int32_t expert[64];

	(void)state;
	ASSERT_OK(assign(a, t, e, t, expert));
	for (uint32_t i = 0; i < t; i++) {
		const float *row = a + (size_t)i * e;

		for (uint32_t j = 0; j < e; j++)
			assert_true(row[expert[i]] >= row[j]);
	}
	free(a);
}

static void test_refusals(void **state)
{
	float a[16 * 4];
	int32_t expert[16], sentinel[16];

	(void)state;
	for (unsigned i = 0; i < 16 * 4; i++)
		a[i] = (float)i;
	for (unsigned i = 0; i < 16; i++)
		sentinel[i] = expert[i] = -7 - (int32_t)i;

	ASSERT_ERRNO(assign(a, 16, 4, 3, expert), EINVAL);
	assert_memory_equal(expert, sentinel, sizeof(expert));
	ASSERT_ERRNO(assign(a, 16, 4, 0, expert), EINVAL);
	ASSERT_ERRNO(assign(a, 16, 0, 16, expert), EINVAL);
	ASSERT_ERRNO(assign(a, 16, 4, 4, NULL), EINVAL);
	ASSERT_ERRNO(assign(NULL, 16, 4, 4, expert), EINVAL);
	assert_memory_equal(expert, sentinel, sizeof(expert));

	a[63] = NAN;
	ASSERT_ERRNO(assign(a, 16, 4, 4, expert), EINVAL);
	a[63] = INFINITY;
	ASSERT_ERRNO(assign(a, 16, 4, 4, expert), EINVAL);
	a[63] = 63.0f;
	a[0] = -INFINITY;
	ASSERT_ERRNO(assign(a, 16, 4, 4, expert), EINVAL);
	assert_memory_equal(expert, sentinel, sizeof(expert));

	/* No tokens is a valid empty batch that writes nothing. */
	ASSERT_OK(assign(a, 0, 4, 0, expert));
	assert_memory_equal(expert, sentinel, sizeof(expert));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_vs_exact),
		cmocka_unit_test(test_small_sweep),
		cmocka_unit_test(test_large_optimal),
		cmocka_unit_test(test_one_expert),
		cmocka_unit_test(test_one_token),
		cmocka_unit_test(test_equal_affinities),
		cmocka_unit_test(test_huge_spread),
		cmocka_unit_test(test_duplicate_rows),
		cmocka_unit_test(test_loose_capacity),
		cmocka_unit_test(test_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
