/* SPDX-License-Identifier: MIT */
/*
 * Tests of the dispatch plan and of gather/combine: the counting sort against
 * a naive per-expert scan on seeded random routings (bins contiguous, (token,
 * slot) order inside a bin, slot_row and row_slot inverse of each other),
 * the degenerate routings (experts that receive nothing, every token to one
 * expert, every slot dropped, one token), the shared-expert bin, and gather
 * and combine on a small example worked out by hand for every scale mode and
 * both drop policies, and the combine's summation order, pinned bitwise.
 */
#include "test_assert.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "dispatch/combine.h"
#include "util/rng.h"
#include "dispatch/plan.h"
#include "router/router.h"
#include "util/scratch.h"

/* ---------------------------------------------------------------- helpers */

static uint32_t float_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

static uint32_t rng_below(uint64_t *state, uint32_t n)
{
	return (uint32_t)(rng_splitmix64(state) % n);
}

/* A route_result over caller-owned arrays (only the fields the plan reads). */
static struct route_result route_of(uint32_t T, uint32_t k, uint32_t E, int32_t *expert,
				    float *weight, float *passthrough)
{
	return (struct route_result){ .n_tokens = T, .k = k, .n_experts = E, .expert = expert,
				      .weight = weight, .passthrough_scale = passthrough };
}

/*
 * Check @p against a naive scan: for every expert in index order, the slots
 * that name it in ascending flattened order are its rows, in that order.
 */
static void plan_check(const struct route_result *r, bool shared, const struct dispatch_plan *p)
{
	const uint32_t T = r->n_tokens, k = r->k, E = r->n_experts;
	uint32_t row = 0;

	assert_int_equal(p->n_tokens, T);
	assert_int_equal(p->k, k);
	assert_int_equal(p->n_bins, E + (shared ? 1 : 0));
	assert_int_equal(p->has_shared, shared);
	assert_int_equal(p->bin_start[0], 0);
	for (uint32_t e = 0; e < E; e++) {
		if (p->bin_start[e] != row)
			fail_msg("bin %u starts at %u, expected %u", e, p->bin_start[e], row);
		for (size_t i = 0; i < (size_t)T * k; i++) {
			if (r->expert[i] != (int32_t)e)
				continue;
			if (p->row_slot[row] != i)
				fail_msg("row %u holds slot %u, expected slot %zu (expert %u)", row,
					 p->row_slot[row], i, e);
			assert_int_equal(p->row_token[row], i / k);
			assert_int_equal(p->slot_row[i], row);
			row++;
		}
		assert_int_equal(p->bin_start[e + 1], row);
	}
	if (shared) {
		for (uint32_t t = 0; t < T; t++, row++) {
			assert_int_equal(p->row_token[row], t);
			assert_int_equal(p->row_slot[row], PLAN_NO_ROW);
		}
		assert_int_equal(p->bin_start[E + 1], row);
	}
	assert_int_equal(p->n_rows, row);
	/* dropped slots have no row; every kept slot's row points back to it */
	for (size_t i = 0; i < (size_t)T * k; i++) {
		if (r->expert[i] < 0) {
			assert_int_equal(p->slot_row[i], PLAN_NO_ROW);
			continue;
		}
		assert_true(p->slot_row[i] < p->n_rows);
		assert_int_equal(p->row_slot[p->slot_row[i]], i);
	}
	/* every non-shared row's slot maps back to the row */
	for (uint32_t rw = 0; rw < p->bin_start[E]; rw++)
		assert_int_equal(p->slot_row[p->row_slot[rw]], rw);
}

static void build_and_check(const struct route_result *r, bool shared, struct scratch *s)
{
	struct dispatch_plan p;

	ASSERT_OK(dispatch_plan_build(r, shared, s, &p));
	plan_check(r, shared, &p);
}

/* ------------------------------------------------------------------ plan */

static void test_plan_random_routings(void **state)
{
	struct scratch s = { 0 };
	uint64_t seed = 42;

	(void)state;
	for (int iter = 0; iter < 300; iter++) {
		uint32_t T = 1 + rng_below(&seed, 70), k = 1 + rng_below(&seed, 4);
		uint32_t E = 1 + rng_below(&seed, 12), drop_pct = rng_below(&seed, 60);
		int32_t *expert = malloc(sizeof(int32_t) * T * k);
		struct route_result r;

		assert_non_null(expert);
		/* duplicates within a token are possible (a client's given routing) */
		for (size_t i = 0; i < (size_t)T * k; i++)
			expert[i] = rng_below(&seed, 100) < drop_pct ? -1
								     : (int32_t)rng_below(&seed, E);
		r = route_of(T, k, E, expert, NULL, NULL);
		scratch_reset(&s);
		build_and_check(&r, false, &s);
		build_and_check(&r, true, &s);
		free(expert);
	}
	scratch_done(&s);
}

static void test_plan_hand_example(void **state)
{
	/* T = 4, k = 2, E = 4: expert 1 and 3 get nothing */
	int32_t expert[8] = { 2, 0, 0, 2, -1, 0, 2, -1 };
	struct route_result r = route_of(4, 2, 4, expert, NULL, NULL);
	struct scratch s = { 0 };
	struct dispatch_plan p;
	static const uint32_t bin_start[5] = { 0, 3, 3, 6, 6 };
	static const uint32_t row_slot[6] = { 1, 2, 5, 0, 3, 6 };
	static const uint32_t row_token[6] = { 0, 1, 2, 0, 1, 3 };
	static const uint32_t slot_row[8] = { 3, 0, 1, 4, PLAN_NO_ROW, 2, 5, PLAN_NO_ROW };

	(void)state;
	ASSERT_OK(dispatch_plan_build(&r, false, &s, &p));
	assert_int_equal(p.n_rows, 6);
	assert_memory_equal(p.bin_start, bin_start, sizeof(bin_start));
	assert_memory_equal(p.row_slot, row_slot, sizeof(row_slot));
	assert_memory_equal(p.row_token, row_token, sizeof(row_token));
	assert_memory_equal(p.slot_row, slot_row, sizeof(slot_row));
	/* empty bins: start == end */
	assert_int_equal(p.bin_start[1], p.bin_start[2]);
	assert_int_equal(p.bin_start[3], p.bin_start[4]);
	scratch_done(&s);
}

static void test_plan_all_to_one_expert(void **state)
{
	enum { T = 33, E = 5 };
	int32_t expert[T];
	struct route_result r = route_of(T, 1, E, expert, NULL, NULL);
	struct scratch s = { 0 };
	struct dispatch_plan p;

	(void)state;
	for (uint32_t t = 0; t < T; t++)
		expert[t] = 4;
	ASSERT_OK(dispatch_plan_build(&r, false, &s, &p));
	plan_check(&r, false, &p);
	for (uint32_t e = 0; e <= 4; e++)
		assert_int_equal(p.bin_start[e], 0);
	assert_int_equal(p.bin_start[5], T);
	for (uint32_t t = 0; t < T; t++) {
		assert_int_equal(p.row_token[t], t);
		assert_int_equal(p.slot_row[t], t);
	}
	scratch_done(&s);
}

static void test_plan_all_dropped(void **state)
{
	int32_t expert[6] = { -1, -1, -1, -1, -1, -1 };
	struct route_result r = route_of(3, 2, 4, expert, NULL, NULL);
	struct scratch s = { 0 };
	struct dispatch_plan p;

	(void)state;
	ASSERT_OK(dispatch_plan_build(&r, false, &s, &p));
	plan_check(&r, false, &p);
	assert_int_equal(p.n_rows, 0);
	for (uint32_t i = 0; i < 6; i++)
		assert_int_equal(p.slot_row[i], PLAN_NO_ROW);
	/* with a shared expert only its bin has rows */
	ASSERT_OK(dispatch_plan_build(&r, true, &s, &p));
	plan_check(&r, true, &p);
	assert_int_equal(p.n_rows, 3);
	assert_int_equal(p.bin_start[4], 0);
	assert_int_equal(p.bin_start[5], 3);
	scratch_done(&s);
}

static void test_plan_one_token_one_expert(void **state)
{
	int32_t expert[1] = { 0 };
	struct route_result r = route_of(1, 1, 1, expert, NULL, NULL);
	struct scratch s = { 0 };
	struct dispatch_plan p;

	(void)state;
	ASSERT_OK(dispatch_plan_build(&r, true, &s, &p));
	plan_check(&r, true, &p);
	assert_int_equal(p.n_rows, 2);
	assert_int_equal(p.n_bins, 2);
	assert_int_equal(p.row_slot[0], 0);
	assert_int_equal(p.row_slot[1], PLAN_NO_ROW);
	scratch_done(&s);
}

/* ------------------------------------------------------- gather/combine */

/*
 * The worked example: d = 2, T = 3, k = 2, E = 3.
 *   token 0 -> (expert 2, 0.75), (expert 0, 0.25)
 *   token 1 -> both slots dropped (passthrough factor 0.6)
 *   token 2 -> (expert 0, 0.5), dropped
 * Rows: bin 0 = slot 1 (token 0), slot 4 (token 2); bin 1 empty; bin 2 = slot 0.
 * Expert outputs are made up: ys[row] = (10, 100) * (row + 1).
 */
static const float ex_x[3][2] = { { 1, 2 }, { 3, 4 }, { 5, 6 } };
static int32_t ex_expert[6] = { 2, 0, -1, -1, 0, -1 };
static float ex_weight[6] = { 0.75f, 0.25f, 0, 0, 0.5f, 0 };
static float ex_pass[3] = { 0.9f, 0.6f, 0.8f };

static void example_plan(struct scratch *s, bool shared, struct route_result *r,
			 struct dispatch_plan *p)
{
	*r = route_of(3, 2, 3, ex_expert, ex_weight, ex_pass);
	ASSERT_OK(dispatch_plan_build(r, shared, s, p));
	assert_int_equal(p->n_rows, shared ? 6 : 3);
}

static void expect_rows(const float *got, const float *want, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (fabsf(got[i] - want[i]) > 1e-6f * (1 + fabsf(want[i])))
			fail_msg("element %u (row %u col %u): %.9g, expected %.9g", i, i / 2, i % 2,
				 got[i], want[i]);
}

static void test_gather(void **state)
{
	struct scratch s = { 0 };
	struct route_result r;
	struct dispatch_plan p;
	float xs[6 * 2];

	(void)state;
	example_plan(&s, false, &r, &p);
	dispatch_gather(&p, &r, SCALE_OUTPUT, &ex_x[0][0], 2, 0, 3, xs);
	expect_rows(xs, (const float[]){ 1, 2, 5, 6, 1, 2 }, 6);
	memset(xs, 0, sizeof(xs));
	dispatch_gather(&p, &r, SCALE_NONE, &ex_x[0][0], 2, 0, 3, xs);
	expect_rows(xs, (const float[]){ 1, 2, 5, 6, 1, 2 }, 6);
	dispatch_gather(&p, &r, SCALE_INPUT, &ex_x[0][0], 2, 0, 3, xs);
	expect_rows(xs, (const float[]){ 0.25f, 0.5f, 2.5f, 3, 0.75f, 1.5f }, 6);

	/* a range writes only its rows */
	for (uint32_t i = 0; i < 6; i++)
		xs[i] = -7;
	dispatch_gather(&p, &r, SCALE_NONE, &ex_x[0][0], 2, 1, 2, xs);
	expect_rows(xs, (const float[]){ -7, -7, 5, 6, -7, -7 }, 6);

	/* with a shared bin: its rows are the tokens, never scaled */
	example_plan(&s, true, &r, &p);
	dispatch_gather(&p, &r, SCALE_INPUT, &ex_x[0][0], 2, 0, 6, xs);
	expect_rows(xs, (const float[]){ 0.25f, 0.5f, 2.5f, 3, 0.75f, 1.5f, 1, 2, 3, 4, 5, 6 },
		    12);
	scratch_done(&s);
}

static void test_combine(void **state)
{
	static const float ys[6][2] = { { 10, 100 }, { 20, 200 }, { 30, 300 },
					{ 1, 1 },   { 2, 2 },     { 3, 3 } };
	struct scratch s = { 0 };
	struct route_result r;
	struct dispatch_plan p;
	float y[3 * 2];

	(void)state;
	example_plan(&s, false, &r, &p);
	/* output: t0 = .75 (30, 300) + .25 (10, 100); t2 = .5 (20, 200) */
	memset(y, 0xff, sizeof(y)); /* NaN: combine must overwrite every element */
	dispatch_combine(&p, &r, SCALE_OUTPUT, DROP_ZERO, &ex_x[0][0], &ys[0][0], NULL, 2, 0, 3,
			 y);
	expect_rows(y, (const float[]){ 25, 250, 0, 0, 10, 100 }, 6);
	/* a fully dropped token under drop=zero is exactly +0 */
	assert_true(y[2] == 0.0f && !signbit(y[2]) && y[3] == 0.0f && !signbit(y[3]));

	dispatch_combine(&p, &r, SCALE_OUTPUT, DROP_PASSTHROUGH, &ex_x[0][0], &ys[0][0], NULL, 2,
			 0, 3, y);
	expect_rows(y, (const float[]){ 25, 250, 3 * 0.6f, 4 * 0.6f, 10, 100 }, 6);

	/* none and input: the gate is not applied at combine */
	dispatch_combine(&p, &r, SCALE_NONE, DROP_ZERO, &ex_x[0][0], &ys[0][0], NULL, 2, 0, 3, y);
	expect_rows(y, (const float[]){ 40, 400, 0, 0, 20, 200 }, 6);
	dispatch_combine(&p, &r, SCALE_INPUT, DROP_PASSTHROUGH, &ex_x[0][0], &ys[0][0], NULL, 2,
			 0, 3, y);
	expect_rows(y, (const float[]){ 40, 400, 3 * 0.6f, 4 * 0.6f, 20, 200 }, 6);

	/* a token range writes only its tokens */
	for (uint32_t i = 0; i < 6; i++)
		y[i] = -7;
	dispatch_combine(&p, &r, SCALE_OUTPUT, DROP_ZERO, &ex_x[0][0], &ys[0][0], NULL, 2, 2, 3,
			 y);
	expect_rows(y, (const float[]){ -7, -7, -7, -7, 10, 100 }, 6);

	/* a shared expert: rows 3..5, gated per token or with weight 1 */
	example_plan(&s, true, &r, &p);
	dispatch_combine(&p, &r, SCALE_OUTPUT, DROP_PASSTHROUGH, &ex_x[0][0], &ys[0][0],
			 (const float[]){ 0.5f, 1.0f, 2.0f }, 2, 0, 3, y);
	expect_rows(y, (const float[]){ 25.5f, 250.5f, 1.8f + 2, 2.4f + 2, 16, 106 }, 6);
	dispatch_combine(&p, &r, SCALE_OUTPUT, DROP_ZERO, &ex_x[0][0], &ys[0][0], NULL, 2, 0, 3,
			 y);
	expect_rows(y, (const float[]){ 26, 251, 2, 2, 13, 103 }, 6);
	scratch_done(&s);
}

/*
 * The combine order is pinned: y[t] = Σ_j g[t,j] · ys[row(t,j)] summed in
 * float32 from +0 in slot order j = 0..k-1, then the shared expert (DESIGN
 * "Combine", combine.h). The values make the order visible: every product is
 * exact (gates 0.5, 1, 2 times values of ±2e8, ±1e8, 1, 2), but 1e8 + 1
 * rounds back to 1e8 in float32, so 1e8 - 1e8 + 1 = 1 while 1 + 1e8 - 1e8 = 0.
 * The expected result is computed here in the documented order and compared
 * bitwise; the test also checks that reversing the slots, or adding the
 * shared expert first, gives other bits, so that it would catch either.
 */
enum { CO_T = 3, CO_K = 3, CO_E = 3, CO_D = 2 };

/* token t: slot j's expert (-1 dropped), gate and expert output; shared gate and output */
static const int32_t co_expert[CO_T][CO_K] = { { 0, 1, 2 }, { 2, -1, 0 }, { 1, 2, 0 } };
static const float co_gate[CO_T][CO_K] = { { 0.5f, 0.5f, 1 }, { 1, 0, 2 }, { 1, 1, 2 } };
static const float co_out[CO_T][CO_K][CO_D] = {
	{ { 2e8f, 2 }, { -2e8f, 2e8f }, { 1, -1e8f } },
	{ { 1e8f, 1e8f }, { 0, 0 }, { 0.5f, -5e7f } },
	{ { 1, 1e8f }, { 1e8f, 1 }, { -5e7f, 0.5f } },
};
static const float co_shared_gate[CO_T] = { 1, 0.5f, 2 };
static const float co_shared_out[CO_T][CO_D] = { { 0, 0 }, { -2e8f, 2 }, { 1, -1e8f } };

enum co_order { CO_DOCUMENTED, CO_SLOTS_REVERSED, CO_SHARED_FIRST };

/* y[t] summed in @order, in float32 as combine does (every product is exact). */
static void combine_order_reference(enum co_order order, float y[CO_T][CO_D])
{
	for (uint32_t t = 0; t < CO_T; t++) {
		for (uint32_t c = 0; c < CO_D; c++) {
			float acc = 0.0f, shared = co_shared_gate[t] * co_shared_out[t][c];

			if (order == CO_SHARED_FIRST)
				acc += shared;
			for (uint32_t i = 0; i < CO_K; i++) {
				uint32_t j = order == CO_SLOTS_REVERSED ? CO_K - 1 - i : i;

				if (co_expert[t][j] >= 0)
					acc += co_gate[t][j] * co_out[t][j][c];
			}
			if (order != CO_SHARED_FIRST)
				acc += shared;
			y[t][c] = acc;
		}
	}
}

static void test_combine_order_pinned(void **state)
{
	struct scratch s = { 0 };
	struct route_result r;
	struct dispatch_plan p;
	int32_t expert[CO_T * CO_K];
	float weight[CO_T * CO_K], pass[CO_T] = { 0 }, x[CO_T * CO_D] = { 0 };
	float want[CO_T][CO_D], other[CO_T][CO_D], y[CO_T * CO_D], *ys;

	(void)state;
	memcpy(expert, co_expert, sizeof(expert));
	memcpy(weight, co_gate, sizeof(weight));
	r = route_of(CO_T, CO_K, CO_E, expert, weight, pass);
	ASSERT_OK(dispatch_plan_build(&r, true, &s, &p));
	ys = calloc(p.n_rows, sizeof(float) * CO_D);
	assert_non_null(ys);
	for (uint32_t t = 0; t < CO_T; t++) {
		for (uint32_t j = 0; j < CO_K; j++) {
			uint32_t row = p.slot_row[t * CO_K + j];

			if (co_expert[t][j] < 0) {
				ASSERT_EQ(row, PLAN_NO_ROW);
				continue;
			}
			memcpy(ys + (size_t)row * CO_D, co_out[t][j], sizeof(float) * CO_D);
		}
		memcpy(ys + ((size_t)p.bin_start[p.n_bins - 1] + t) * CO_D, co_shared_out[t],
		       sizeof(float) * CO_D);
	}

	combine_order_reference(CO_DOCUMENTED, want);
	/* the example can tell the orders apart (1 where another order gives 0) */
	assert_true(want[0][0] == 1.0f && want[0][1] == 0.0f);
	combine_order_reference(CO_SLOTS_REVERSED, other);
	assert_true(memcmp(want, other, sizeof(want)) != 0);
	combine_order_reference(CO_SHARED_FIRST, other);
	assert_true(memcmp(want, other, sizeof(want)) != 0);

	/* in one range, and split in two as two workers would: same bits */
	for (int split = 0; split < 2; split++) {
		memset(y, 0xff, sizeof(y));
		if (split) {
			dispatch_combine(&p, &r, SCALE_OUTPUT, DROP_ZERO, x, ys, co_shared_gate,
					 CO_D, 0, 1, y);
			dispatch_combine(&p, &r, SCALE_OUTPUT, DROP_ZERO, x, ys, co_shared_gate,
					 CO_D, 1, CO_T, y);
		} else {
			dispatch_combine(&p, &r, SCALE_OUTPUT, DROP_ZERO, x, ys, co_shared_gate,
					 CO_D, 0, CO_T, y);
		}
		for (uint32_t i = 0; i < CO_T * CO_D; i++)
			if (memcmp(&y[i], &want[i / CO_D][i % CO_D], sizeof(float)) != 0)
				fail_msg("token %u col %u: %.9g (0x%08x), the documented order "
					 "(slots 0..k-1, then shared) gives %.9g", i / CO_D,
					 i % CO_D, y[i], float_bits(y[i]), want[i / CO_D][i % CO_D]);
	}
	free(ys);
	scratch_done(&s);
}

/*
 * Gather, an identity "expert" and combine on a random routing: with scale
 * none, y[t] = (number of kept slots) * x[t]; with scale output,
 * y[t] = (sum of kept weights) * x[t]; with input, the same.
 */
static void test_gather_combine_roundtrip(void **state)
{
	enum { T = 50, K = 3, E = 7, D = 5 };
	struct scratch s = { 0 };
	struct route_result r;
	struct dispatch_plan p;
	int32_t expert[T * K];
	float weight[T * K], pass[T], x[T * D], y[T * D], *xs;
	uint64_t seed = 9;

	(void)state;
	for (uint32_t i = 0; i < T * K; i++) {
		expert[i] = rng_below(&seed, 4) == 0 ? -1 : (int32_t)rng_below(&seed, E);
		weight[i] = expert[i] < 0 ? 0 : (float)rng_below(&seed, 1000) / 1000;
	}
	for (uint32_t t = 0; t < T; t++)
		pass[t] = 0.5f;
	for (uint32_t i = 0; i < T * D; i++)
		x[i] = (float)rng_below(&seed, 200) - 100;
	r = route_of(T, K, E, expert, weight, pass);
	ASSERT_OK(dispatch_plan_build(&r, false, &s, &p));
	xs = malloc(sizeof(float) * (p.n_rows + 1) * D);
	assert_non_null(xs);
	for (int mode = 0; mode < 3; mode++) {
		enum scale_mode sc = mode == 0 ? SCALE_NONE : mode == 1 ? SCALE_OUTPUT : SCALE_INPUT;

		/* gather in two ranges, as two workers would */
		dispatch_gather(&p, &r, sc, x, D, 0, p.n_rows / 2, xs);
		dispatch_gather(&p, &r, sc, x, D, p.n_rows / 2, p.n_rows, xs);
		dispatch_combine(&p, &r, sc, DROP_PASSTHROUGH, x, xs, NULL, D, 0, T, y);
		for (uint32_t t = 0; t < T; t++) {
			double f = 0;
			bool any = false;

			for (uint32_t j = 0; j < K; j++) {
				if (expert[t * K + j] < 0)
					continue;
				any = true;
				f += sc == SCALE_NONE ? 1.0 : weight[t * K + j];
			}
			if (!any)
				f = 0.5;
			for (uint32_t c = 0; c < D; c++)
				ASSERT_CLOSE(y[t * D + c], f * x[t * D + c], 1e-5, 1e-6);
		}
	}
	free(xs);
	scratch_done(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan_random_routings),
		cmocka_unit_test(test_plan_hand_example),
		cmocka_unit_test(test_plan_all_to_one_expert),
		cmocka_unit_test(test_plan_all_dropped),
		cmocka_unit_test(test_plan_one_token_one_expert),
		cmocka_unit_test(test_gather),
		cmocka_unit_test(test_combine),
		cmocka_unit_test(test_gather_combine_roundtrip),
		cmocka_unit_test(test_combine_order_pinned),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
