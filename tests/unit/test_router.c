/* SPDX-License-Identifier: MIT */
/*
 * Tests of the routers on small layers built by hand. The router weight of
 * most layers here is the identity (d_model = E), so a row of the input *is*
 * the row of logits and every expected choice, weight, count and loss below
 * is computed by hand or by a naive double-precision reference in this file:
 * capacity_of() at its boundaries, switch with a capacity of one (token-order
 * and score priority), top-k with k = E, renormalisation and sigmoid scores,
 * the two GShard variants under a tight capacity and its second-expert
 * policies, client-given routing and its refusals, the option table, the
 * router z-loss, and router_stats() over runs of tokens against those runs
 * routed alone (bitwise, every per-token router).
 */
#include "test_assert.h"

#include <errno.h>
#include <float.h>
#include <stdbool.h>
#include <stdlib.h>

#include "router/router.h"
#include "util/rng.h"
#include "router/router_config.h"
#include "util/scratch.h"

/* ---------------------------------------------------------------- helpers */

#define MAX_E 16

/* A layer whose router is the identity: logits = x, exactly. */
struct id_layer {
	struct moe_layer layer;
	float w[MAX_E * MAX_E];
};

static void id_layer_init(struct id_layer *il, uint32_t n_experts)
{
	assert_true(n_experts <= MAX_E);
	memset(il, 0, sizeof(*il));
	for (uint32_t e = 0; e < n_experts; e++)
		il->w[e * n_experts + e] = 1.0f;
	il->layer.d_model = n_experts;
	il->layer.n_experts = n_experts;
	il->layer.router_w = il->w;
	router_config_init(&il->layer.router);
}

/* Uniform in [lo, hi). */
static float rng_uniform(uint64_t *state, float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(rng_splitmix64(state) >> 11) * 0x1p-53);
}

/* Naive softmax of one row of logits, in double. */
static void softmax_row(const float *l, uint32_t n, double *p)
{
	double max = -INFINITY, sum = 0;

	for (uint32_t e = 0; e < n; e++)
		max = fmax(max, l[e]);
	for (uint32_t e = 0; e < n; e++)
		sum += exp((double)l[e] - max);
	for (uint32_t e = 0; e < n; e++)
		p[e] = exp((double)l[e] - max) / sum;
}

static double sigmoid(double v)
{
	return 1.0 / (1.0 + exp(-v));
}

/* Route through the public entry point; fails the test on error. */
static void route_ok(const struct moe_layer *L, const struct router_config *c, const float *x,
		     uint32_t T, const struct route_given *g, struct scratch *s,
		     struct route_result *r)
{
	struct diag d = { { 0 } };
	int rc = router_route(L, c, x, T, g, s, r, &d);

	if (rc < 0)
		fail_msg("router_route: %s (%s)", d.msg, strerror(-rc));
	assert_int_equal(r->n_tokens, T);
	assert_int_equal(r->n_experts, L->n_experts);
	assert_int_equal(r->k, router_config_slots(c));
}

static void expect_experts(const struct route_result *r, const int32_t *want)
{
	for (size_t i = 0; i < (size_t)r->n_tokens * r->k; i++)
		if (r->expert[i] != want[i])
			fail_msg("token %zu slot %zu: expert %d, expected %d", i / r->k, i % r->k,
				 r->expert[i], want[i]);
}

static void expect_tpe(const struct route_result *r, const int32_t *want)
{
	for (uint32_t e = 0; e < r->n_experts; e++)
		if (r->tokens_per_expert[e] != want[e])
			fail_msg("tokens_per_expert[%u] = %d, expected %d", e,
				 r->tokens_per_expert[e], want[e]);
}

/* Every -1 slot has weight exactly 0. */
static void expect_dropped_weights_zero(const struct route_result *r)
{
	for (size_t i = 0; i < (size_t)r->n_tokens * r->k; i++)
		if (r->expert[i] < 0 && r->weight[i] != 0.0f)
			fail_msg("dropped slot %zu has weight %g", i, r->weight[i]);
}

/* ------------------------------------------------------------- capacity */

static void test_capacity_of(void **state)
{
	(void)state;
	/* cf 0 (and anything <= 0) is dropless */
	assert_int_equal(capacity_of(0.0, 1, 100, 4, 0), UINT32_MAX);
	assert_int_equal(capacity_of(0.0, 2, 1, 8, 5), UINT32_MAX);
	/* exact and truncated quotients */
	assert_int_equal(capacity_of(1.0, 1, 8, 4, 0), 2);
	assert_int_equal(capacity_of(1.25, 1, 8, 4, 0), 2);   /* 2.5 */
	assert_int_equal(capacity_of(1.5, 2, 7, 4, 0), 5);    /* 5.25 */
	assert_int_equal(capacity_of(2.0, 2, 10, 4, 0), 10);  /* exactly 10 */
	assert_int_equal(capacity_of(1.0, 2, 3, 4, 0), 1);    /* 1.5 */
	/* left-to-right in double: 0.29 * 1 * 100 = 28.999999999999996 -> 28 */
	assert_int_equal(capacity_of(0.29, 1, 100, 1, 0), 28);
	assert_int_equal(capacity_of(0.29, 1, 100, 1, 29), 29);
	/* min_capacity wins when larger, loses when smaller */
	assert_int_equal(capacity_of(1.0, 1, 8, 4, 5), 5);
	assert_int_equal(capacity_of(1.0, 1, 8, 4, 1), 2);
	assert_int_equal(capacity_of(1.0, 1, 8, 4, 2), 2);
	/* never 0, even for a one-token decode batch */
	assert_int_equal(capacity_of(0.1, 1, 2, 8, 0), 1);
	assert_int_equal(capacity_of(1.0, 2, 1, 64, 0), 1);
	assert_int_equal(capacity_of(1e-6, 1, 1, 1, 0), 1);
	/* far beyond uint32: saturates instead of wrapping */
	assert_true(capacity_of(1e6, 1024, 1u << 20, 1, 0) >= UINT32_MAX - 1);
}

/* --------------------------------------------------------------- switch */

/* Five tokens that all pick expert 2 of 4, with different confidence. */
static const float all_to_two[5][4] = {
	{ 0.0f, 0.5f, 2.0f, -1.0f },
	{ 1.0f, 0.0f, 1.5f, 0.0f },
	{ 0.0f, 0.0f, 1.0f, 0.0f },
	{ -2.0f, -2.0f, 4.0f, -2.0f }, /* the most confident */
	{ 0.3f, 0.2f, 0.4f, 0.1f },
};

static void test_switch_capacity_one_token_order(void **state)
{
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;
	double p[4], mean_p[4] = { 0 }, aux = 0;
	const int32_t want[5] = { 2, -1, -1, -1, -1 }, tpe[4] = { 0, 0, 5, 0 };

	(void)state;
	id_layer_init(&il, 4);
	router_config_init(&c);
	c.kind = ROUTER_SWITCH;
	c.capacity_factor = 1.0; /* int(1 * 1 * 5 / 4) = 1 */
	assert_int_equal(capacity_of(c.capacity_factor, 1, 5, 4, 0), 1);
	route_ok(&il.layer, &c, &all_to_two[0][0], 5, NULL, &s, &r);

	expect_experts(&r, want);
	expect_tpe(&r, tpe); /* counted before capacity */
	assert_int_equal(r.n_dropped, 4);
	expect_dropped_weights_zero(&r);
	softmax_row(all_to_two[0], 4, p);
	ASSERT_CLOSE(r.weight[0], p[2], 1e-7, 1e-6);
	/* passthrough scale is the top-1 probability of every token (scale=output) */
	for (uint32_t t = 0; t < 5; t++) {
		softmax_row(all_to_two[t], 4, p);
		ASSERT_CLOSE(r.passthrough_scale[t], p[2], 1e-7, 1e-6);
		for (uint32_t e = 0; e < 4; e++)
			mean_p[e] += p[e] / 5;
	}
	/* aux = E * sum_e f_e * P_e, f from the choices before capacity */
	for (uint32_t e = 0; e < 4; e++)
		aux += tpe[e] / 5.0 * mean_p[e];
	ASSERT_CLOSE(r.aux_loss, 4 * aux, 1e-12, 1e-9);
	assert_true(r.has_z_loss);

	/* scale=none: the passthrough factor is 1 */
	c.scale = SCALE_NONE;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &all_to_two[0][0], 5, NULL, &s, &r);
	for (uint32_t t = 0; t < 5; t++)
		assert_true(r.passthrough_scale[t] == 1.0f);

	/* min_capacity 3: the first three tokens keep their expert */
	c.min_capacity = 3;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &all_to_two[0][0], 5, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 2, 2, 2, -1, -1 });
	assert_int_equal(r.n_dropped, 2);

	/* dropless: everyone keeps it */
	c.capacity_factor = 0;
	c.min_capacity = 0;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &all_to_two[0][0], 5, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 2, 2, 2, 2, 2 });
	assert_int_equal(r.n_dropped, 0);
	scratch_done(&s);
}

/*
 * topk with priority=score follows V-MoE's batch-prioritized routing: tokens
 * by descending top-1 score, every first choice before any second choice.
 * Token 0 (top-1 p = 0.71 on expert 0, then expert 1) and token 1 (top-1
 * p = 0.55 on expert 1, then expert 0), capacity 1: both first choices
 * fit, both second choices find their expert full. In token order token 0
 * would take both experts and token 1 nothing.
 */
static void test_topk_priority_score_k_leads(void **state)
{
	static const float x[2][3] = { { 3, 2, 0 }, { 1, 1.5f, 0 } };
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;

	(void)state;
	id_layer_init(&il, 3);
	router_config_init(&c);
	c.kind = ROUTER_TOPK;
	c.top_k = 2;
	c.capacity_factor = 0.25; /* int(0.25 * 2 * 2 / 3) = 0: min_capacity 1 */
	c.min_capacity = 1;
	c.priority = PRIORITY_SCORE;
	assert_int_equal(capacity_of(c.capacity_factor, 2, 2, 3, 1), 1);
	route_ok(&il.layer, &c, &x[0][0], 2, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 0, -1, 1, -1 });
	assert_int_equal(r.n_dropped, 2);
	expect_dropped_weights_zero(&r);

	c.priority = PRIORITY_TOKEN;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &x[0][0], 2, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 0, 1, -1, -1 });
	scratch_done(&s);
}

static void test_switch_priority_score(void **state)
{
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;
	double p[4];

	(void)state;
	id_layer_init(&il, 4);
	router_config_init(&c);
	c.kind = ROUTER_SWITCH;
	c.capacity_factor = 1.0;
	c.priority = PRIORITY_SCORE;
	route_ok(&il.layer, &c, &all_to_two[0][0], 5, NULL, &s, &r);
	/* token 3 is the most confident: it keeps expert 2, token 0 loses it */
	expect_experts(&r, (const int32_t[]){ -1, -1, -1, 2, -1 });
	expect_tpe(&r, (const int32_t[]){ 0, 0, 5, 0 });
	assert_int_equal(r.n_dropped, 4);
	softmax_row(all_to_two[3], 4, p);
	ASSERT_CLOSE(r.weight[3], p[2], 1e-7, 1e-6);
	expect_dropped_weights_zero(&r);

	/* capacity 2 by score: tokens 3 (p≈.99) and 0 (p≈.69) */
	c.min_capacity = 2;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &all_to_two[0][0], 5, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 2, -1, -1, 2, -1 });
	scratch_done(&s);
}

/* Switch picks the argmax; ties go to the lower index (torch.argmax). */
static void test_switch_argmax_and_tie(void **state)
{
	static const float x[3][3] = {
		{ 1.0f, 3.0f, 2.0f },
		{ 5.0f, 5.0f, 0.0f }, /* a tie: expert 0 */
		{ -1.0f, -3.0f, -0.5f },
	};
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;

	(void)state;
	id_layer_init(&il, 3);
	router_config_init(&c);
	c.kind = ROUTER_SWITCH;
	route_ok(&il.layer, &c, &x[0][0], 3, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 1, 0, 2 });
	expect_tpe(&r, (const int32_t[]){ 1, 1, 1 });
	ASSERT_CLOSE(r.weight[1], 0.5 / (1 + 0.5 * exp(-5.0)), 1e-7, 1e-6);
	scratch_done(&s);
}

/* ----------------------------------------------------------------- topk */

static void test_topk_k_equals_e(void **state)
{
	enum { T = 6, E = 5 };
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;
	float x[T][E];
	uint64_t seed = 11;

	(void)state;
	for (uint32_t t = 0; t < T; t++)
		for (uint32_t e = 0; e < E; e++)
			x[t][e] = rng_uniform(&seed, -3, 3);
	id_layer_init(&il, E);
	router_config_init(&c);
	c.kind = ROUTER_TOPK;
	c.top_k = E;
	for (int norm = 0; norm < 2; norm++) {
		c.normalize = norm;
		scratch_reset(&s);
		route_ok(&il.layer, &c, &x[0][0], T, NULL, &s, &r);
		expect_tpe(&r, (const int32_t[]){ T, T, T, T, T });
		assert_int_equal(r.n_dropped, 0);
		for (uint32_t t = 0; t < T; t++) {
			double p[E], sum = 0;
			bool seen[E] = { false };

			softmax_row(x[t], E, p);
			for (uint32_t j = 0; j < E; j++) {
				int32_t e = r.expert[t * E + j];

				assert_true(e >= 0 && e < E);
				assert_false(seen[e]);
				seen[e] = true;
				/* slot j holds the j-th largest probability */
				ASSERT_CLOSE(r.weight[t * E + j], p[e], 1e-7, 1e-6);
				if (j > 0)
					assert_true(p[r.expert[t * E + j - 1]] > p[e]);
				sum += r.weight[t * E + j];
			}
			ASSERT_CLOSE(sum, 1.0, 1e-6, 0);
		}
		/* aux = E/(T*k) * <tpe, mean_t P> = E/(T*E) * T * sum_e mean P = 1 */
		ASSERT_CLOSE(r.aux_loss, 1.0, 1e-9, 0);
	}
	scratch_done(&s);
}

static void test_topk_normalize(void **state)
{
	static const float x[2][4] = {
		{ 1.0f, 2.0f, 0.5f, -1.0f },  /* top-2: 1, 0 */
		{ 0.0f, -1.0f, 3.0f, 2.9f },  /* top-2: 2, 3 */
	};
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;
	double p0[4], p1[4], aux = 0;

	(void)state;
	softmax_row(x[0], 4, p0);
	softmax_row(x[1], 4, p1);
	id_layer_init(&il, 4);
	router_config_init(&c);
	c.top_k = 2;

	c.normalize = false;
	route_ok(&il.layer, &c, &x[0][0], 2, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 1, 0, 2, 3 });
	expect_tpe(&r, (const int32_t[]){ 1, 1, 1, 1 });
	ASSERT_CLOSE(r.weight[0], p0[1], 1e-7, 1e-6);
	ASSERT_CLOSE(r.weight[1], p0[0], 1e-7, 1e-6);
	ASSERT_CLOSE(r.weight[2], p1[2], 1e-7, 1e-6);
	ASSERT_CLOSE(r.weight[3], p1[3], 1e-7, 1e-6);
	ASSERT_CLOSE(r.passthrough_scale[0], p0[1], 1e-7, 1e-6);
	/* aux = E/(T k) <tpe, mean P> */
	for (uint32_t e = 0; e < 4; e++)
		aux += 1 * (p0[e] + p1[e]) / 2;
	ASSERT_CLOSE(r.aux_loss, 4.0 / (2 * 2) * aux, 1e-12, 1e-9);

	c.normalize = true;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &x[0][0], 2, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 1, 0, 2, 3 });
	ASSERT_CLOSE(r.weight[0], p0[1] / (p0[1] + p0[0]), 1e-7, 1e-6);
	ASSERT_CLOSE(r.weight[1], p0[0] / (p0[1] + p0[0]), 1e-7, 1e-6);
	ASSERT_CLOSE(r.weight[2], 1 / (1 + exp(-0.1)), 1e-7, 1e-6);
	ASSERT_CLOSE(r.weight[3], 1 / (1 + exp(0.1)), 1e-7, 1e-6);
	/* the passthrough factor stays the unnormalised top-1 probability */
	ASSERT_CLOSE(r.passthrough_scale[1], p1[2], 1e-7, 1e-6);
	scratch_done(&s);
}

static void test_topk_sigmoid(void **state)
{
	static const float x[3][4] = {
		{ -1.0f, 2.0f, 0.5f, 1.0f },  /* top-2: 1, 3 */
		{ -4.0f, -3.0f, -2.0f, -5.0f }, /* top-2: 2, 1 (all small) */
		{ 0.0f, 0.0f, 0.25f, -0.25f }, /* top-2: 2, 0 (tie 0/1: lower index) */
	};
	static const int32_t want[6] = { 1, 3, 2, 1, 2, 0 };
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;
	double mean_a[4] = { 0 }, aux = 0;

	(void)state;
	id_layer_init(&il, 4);
	router_config_init(&c);
	c.top_k = 2;
	c.score = SCORE_SIGMOID;
	c.normalize = false;
	route_ok(&il.layer, &c, &x[0][0], 3, NULL, &s, &r);
	expect_experts(&r, want);
	for (uint32_t i = 0; i < 6; i++)
		ASSERT_CLOSE(r.weight[i], sigmoid(x[i / 2][want[i]]), 1e-7, 1e-6);
	/* aux: the affinities normalised over experts, s / sum_e s */
	for (uint32_t t = 0; t < 3; t++) {
		double sum = 0;

		for (uint32_t e = 0; e < 4; e++)
			sum += sigmoid(x[t][e]);
		for (uint32_t e = 0; e < 4; e++)
			mean_a[e] += sigmoid(x[t][e]) / sum / 3;
	}
	for (uint32_t e = 0; e < 4; e++)
		aux += r.tokens_per_expert[e] * mean_a[e];
	expect_tpe(&r, (const int32_t[]){ 1, 2, 2, 1 });
	ASSERT_CLOSE(r.aux_loss, 4.0 / (3 * 2) * aux, 1e-12, 1e-9);

	c.normalize = true;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &x[0][0], 3, NULL, &s, &r);
	expect_experts(&r, want);
	for (uint32_t t = 0; t < 3; t++) {
		double a = sigmoid(x[t][want[2 * t]]), b = sigmoid(x[t][want[2 * t + 1]]);

		ASSERT_CLOSE(r.weight[2 * t], a / (a + b), 1e-7, 1e-6);
		ASSERT_CLOSE(r.weight[2 * t + 1], b / (a + b), 1e-7, 1e-6);
	}
	scratch_done(&s);
}

/* Capacity in flattened (token, slot) order: earlier tokens win both slots. */
static void test_topk_capacity_order(void **state)
{
	static const float x[4][3] = {
		{ 3.0f, 2.0f, 0.0f }, /* 0, 1 */
		{ 2.0f, 3.0f, 0.0f }, /* 1, 0 */
		{ 3.0f, 0.0f, 2.0f }, /* 0, 2 : expert 0 full */
		{ 0.0f, 3.0f, 2.0f }, /* 1, 2 : expert 1 full */
	};
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;

	(void)state;
	id_layer_init(&il, 3);
	router_config_init(&c);
	c.top_k = 2;
	c.capacity_factor = 0.75; /* int(0.75 * 2 * 4 / 3) = 2 */
	assert_int_equal(capacity_of(0.75, 2, 4, 3, 0), 2);
	route_ok(&il.layer, &c, &x[0][0], 4, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 0, 1, 1, 0, -1, 2, -1, 2 });
	expect_tpe(&r, (const int32_t[]){ 3, 3, 2 });
	assert_int_equal(r.n_dropped, 2);
	expect_dropped_weights_zero(&r);
	/* a surviving slot keeps its weight as it was before capacity */
	{
		double p[3];

		softmax_row(x[2], 3, p);
		ASSERT_CLOSE(r.weight[5], p[2], 1e-7, 1e-6);
	}
	scratch_done(&s);
}

/* --------------------------------------------------------------- gshard */

/*
 * E = 4, capacity 2. First choices: expert 0 by tokens 0, 1, 2 (token 2
 * dropped), expert 1 by tokens 3, 4. Second choices queue behind the first:
 * token 0's second (expert 1) is dropped although token 0 comes before
 * tokens 3 and 4; token 1 -> 2 and token 4 -> 2 fit; token 2's second
 * (expert 3) survives its dropped first choice; token 3's second (0) is full.
 */
static const float gshard_x[5][4] = {
	{ 3.0f, 2.0f, 0.0f, 0.0f },
	{ 3.0f, 0.0f, 2.0f, 0.0f },
	{ 3.0f, 0.0f, 0.0f, 2.0f },
	{ 2.0f, 3.0f, 0.0f, 0.0f },
	{ 0.0f, 3.0f, 2.0f, 0.0f },
};
static const int32_t gshard_first[5] = { 0, 0, 0, 1, 1 };
static const int32_t gshard_second[5] = { 1, 2, 3, 0, 2 };
static const int32_t gshard_want[10] = { 0, -1, 0, 2, -1, 3, 1, -1, 1, 2 };

/* Naive aux of both variants: mean_e(mean_t p * mean_t first mask), times E² for mesh-tf. */
static double gshard_aux_naive(const float (*x)[4], const int32_t *first, uint32_t T)
{
	double mp[4] = { 0 }, f[4] = { 0 }, aux = 0;

	for (uint32_t t = 0; t < T; t++) {
		double p[4];

		softmax_row(x[t], 4, p);
		for (uint32_t e = 0; e < 4; e++)
			mp[e] += p[e] / T;
		f[first[t]] += 1.0 / T;
	}
	for (uint32_t e = 0; e < 4; e++)
		aux += mp[e] * f[e];
	return aux / 4;
}

static void test_gshard_variants_tight_capacity(void **state)
{
	struct scratch s = { 0 };
	struct route_result mt, fs;
	struct id_layer il;
	struct router_config c;
	double aux = gshard_aux_naive(gshard_x, gshard_first, 5);

	(void)state;
	id_layer_init(&il, 4);
	router_config_init(&c);
	c.kind = ROUTER_GSHARD;
	c.capacity_factor = 0.1; /* int(0.1 * 2 * 5 / 4) = 0 ... */
	c.min_capacity = 2;      /* ... so min_capacity makes it 2 */
	assert_int_equal(capacity_of(0.1, 2, 5, 4, 2), 2);

	c.top2_variant = TOP2_MESHTF;
	route_ok(&il.layer, &c, &gshard_x[0][0], 5, NULL, &s, &mt);
	c.top2_variant = TOP2_FAIRSCALE;
	route_ok(&il.layer, &c, &gshard_x[0][0], 5, NULL, &s, &fs);

	/*
	 * The two queueing rules (behind the surviving first choices, or behind
	 * all of them) drop the same slots: min(n1, cap) + i < cap exactly when
	 * n1 + i < cap. The variants differ in the weights and the aux loss.
	 */
	expect_experts(&mt, gshard_want);
	expect_experts(&fs, gshard_want);
	assert_int_equal(mt.n_dropped, 3);
	assert_int_equal(fs.n_dropped, 3);
	expect_tpe(&mt, (const int32_t[]){ 4, 3, 2, 1 });
	expect_tpe(&fs, (const int32_t[]){ 4, 3, 2, 1 });
	expect_dropped_weights_zero(&mt);
	expect_dropped_weights_zero(&fs);

	for (uint32_t t = 0; t < 5; t++) {
		double p[4], g1, g2, n1, n2;
		bool k1 = gshard_want[2 * t] >= 0, k2 = gshard_want[2 * t + 1] >= 0;

		softmax_row(gshard_x[t], 4, p);
		g1 = p[gshard_first[t]];
		g2 = p[gshard_second[t]];
		/* mesh-tf: normalised before capacity, whatever survives */
		n1 = g1 / (g1 + g2);
		n2 = g2 / (g1 + g2);
		ASSERT_CLOSE(mt.weight[2 * t], k1 ? n1 : 0, 1e-7, 1e-6);
		ASSERT_CLOSE(mt.weight[2 * t + 1], k2 ? n2 : 0, 1e-7, 1e-6);
		/* fairscale: renormalised over the survivors */
		if (k1 && k2) {
			ASSERT_CLOSE(fs.weight[2 * t], n1, 1e-7, 1e-6);
			ASSERT_CLOSE(fs.weight[2 * t + 1], n2, 1e-7, 1e-6);
		} else {
			ASSERT_CLOSE(fs.weight[2 * t], k1 ? 1.0 : 0.0, 1e-7, 0);
			ASSERT_CLOSE(fs.weight[2 * t + 1], k2 ? 1.0 : 0.0, 1e-7, 0);
		}
		/* passthrough: top-1 probability for both */
		ASSERT_CLOSE(mt.passthrough_scale[t], g1, 1e-7, 1e-6);
		ASSERT_CLOSE(fs.passthrough_scale[t], g1, 1e-7, 1e-6);
	}
	/* token 0: the second slot is dropped; mesh-tf keeps 0.73, fairscale 1 */
	assert_true(mt.weight[0] < 0.75f && fs.weight[0] == 1.0f);
	/* token 2: only the second slot survives */
	assert_true(mt.weight[5] < 0.3f && fs.weight[5] == 1.0f);

	ASSERT_CLOSE(fs.aux_loss, aux, 1e-12, 1e-9);
	ASSERT_CLOSE(mt.aux_loss, 16 * aux, 1e-12, 1e-9);

	/* dropless (cf 0): every first and every second choice is kept */
	c.capacity_factor = 0;
	c.min_capacity = 0;
	c.top2_variant = TOP2_MESHTF;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &gshard_x[0][0], 5, NULL, &s, &mt);
	for (uint32_t t = 0; t < 5; t++) {
		assert_int_equal(mt.expert[2 * t], gshard_first[t]);
		assert_int_equal(mt.expert[2 * t + 1], gshard_second[t]);
	}
	assert_int_equal(mt.n_dropped, 0);
	scratch_done(&s);
}

/* Tokens [2, 2 - gap, -5]: the normalised second gate is σ(-gap). */
static void gap_tokens(float (*x)[3], const double *gaps, uint32_t n)
{
	for (uint32_t t = 0; t < n; t++) {
		x[t][0] = 2.0f;
		x[t][1] = (float)(2.0 - gaps[t]);
		x[t][2] = -5.0f;
	}
}

static void test_gshard_second_policy(void **state)
{
	static const double gaps[6] = { 0.1, 0.5, 1.0, 1.5, 2.0, 3.0 };
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;
	float x[6][3];

	(void)state;
	gap_tokens(x, gaps, 6);
	id_layer_init(&il, 3);
	router_config_init(&c);
	c.kind = ROUTER_GSHARD;
	c.top2_variant = TOP2_MESHTF;

	c.second_policy = SECOND_ALL;
	route_ok(&il.layer, &c, &x[0][0], 6, NULL, &s, &r);
	expect_tpe(&r, (const int32_t[]){ 6, 6, 0 });
	for (uint32_t t = 0; t < 6; t++)
		assert_int_equal(r.expert[2 * t + 1], 1);

	c.second_policy = SECOND_NONE;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &x[0][0], 6, NULL, &s, &r);
	expect_tpe(&r, (const int32_t[]){ 6, 0, 0 });
	assert_int_equal(r.n_dropped, 0); /* the policy is not capacity */
	for (uint32_t t = 0; t < 6; t++) {
		double p0 = 1.0, p1 = exp(-(double)(x[t][0] - x[t][1]));

		assert_int_equal(r.expert[2 * t], 0);
		assert_int_equal(r.expert[2 * t + 1], -1);
		assert_true(r.weight[2 * t + 1] == 0.0f);
		/* mesh-tf keeps the first gate as normalised with the second */
		ASSERT_CLOSE(r.weight[2 * t], p0 / (p0 + p1), 1e-6, 1e-6);
	}

	/* threshold 0.2 on σ(-gap): .475 .378 .269 kept; .182 .119 .047 not */
	c.second_policy = SECOND_THRESHOLD;
	c.second_threshold = 0.2;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &x[0][0], 6, NULL, &s, &r);
	expect_tpe(&r, (const int32_t[]){ 6, 3, 0 });
	expect_experts(&r, (const int32_t[]){ 0, 1, 0, 1, 0, 1, 0, -1, 0, -1, 0, -1 });

	/* threshold 0.5: nothing reaches it */
	c.second_threshold = 0.5;
	scratch_reset(&s);
	route_ok(&il.layer, &c, &x[0][0], 6, NULL, &s, &r);
	expect_tpe(&r, (const int32_t[]){ 6, 0, 0 });
	scratch_done(&s);
}

static void test_gshard_random_policy(void **state)
{
	enum { T = 400 };
	struct scratch s = { 0 };
	struct route_result a, b, other;
	struct id_layer il;
	struct router_config c;
	double gaps[T], expected = 0, var = 0;
	float(*x)[3] = malloc(sizeof(float[T][3]));
	uint64_t seed = 5;
	uint32_t kept = 0, diff = 0;

	(void)state;
	assert_non_null(x);
	for (uint32_t t = 0; t < T; t++)
		gaps[t] = rng_uniform(&seed, 0.0f, 4.0f);
	gap_tokens(x, gaps, T);
	id_layer_init(&il, 3);
	router_config_init(&c);
	c.kind = ROUTER_GSHARD;
	c.second_policy = SECOND_RANDOM;
	c.second_threshold = 0.5; /* keep with probability 2 * σ(-gap) */
	c.seed = 1234;
	route_ok(&il.layer, &c, &x[0][0], T, NULL, &s, &a);
	route_ok(&il.layer, &c, &x[0][0], T, NULL, &s, &b);
	/* the same seed gives the same answer */
	assert_memory_equal(a.expert, b.expert, sizeof(int32_t) * T * 2);
	assert_memory_equal(a.weight, b.weight, sizeof(float) * T * 2);
	assert_memory_equal(a.tokens_per_expert, b.tokens_per_expert, sizeof(int32_t) * 3);

	for (uint32_t t = 0; t < T; t++) {
		double q = 2.0 / (1.0 + exp((double)(x[t][0] - x[t][1])));

		expected += q;
		var += q * (1 - q);
		kept += a.expert[2 * t + 1] >= 0;
		assert_int_equal(a.expert[2 * t], 0);
	}
	assert_int_equal(a.tokens_per_expert[0], T);
	assert_int_equal(a.tokens_per_expert[1], kept);
	/* a keep rate that follows the probabilities (fixed seed: no flakiness) */
	if (fabs(kept - expected) > 5 * sqrt(var))
		fail_msg("random policy kept %u second choices, expected %.1f ± %.1f", kept,
			 expected, sqrt(var));
	/* and it is neither 'all' nor 'none' nor the threshold rule */
	assert_true(kept > 0 && kept < T);

	/* another seed draws differently */
	c.seed = 99;
	route_ok(&il.layer, &c, &x[0][0], T, NULL, &s, &other);
	for (uint32_t t = 0; t < T; t++)
		diff += (a.expert[2 * t + 1] >= 0) != (other.expert[2 * t + 1] >= 0);
	assert_true(diff > 0);
	free(x);
	scratch_done(&s);
}

/* ---------------------------------------------------------------- given */

static void test_given_valid(void **state)
{
	static const int32_t ex[6] = { 0, 3, -1, 2, 1, -1 };
	static const float w[6] = { 0.7f, 0.3f, 0.9f, 0.4f, 1.5f, 2.0f };
	struct route_given g = { ex, w };
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;

	(void)state;
	id_layer_init(&il, 4);
	il.layer.router_w = NULL; /* the client routes: no router weight needed */
	router_config_init(&c);
	c.kind = ROUTER_GIVEN;
	c.top_k = 2;
	route_ok(&il.layer, &c, NULL, 3, &g, &s, &r);
	expect_experts(&r, ex);
	assert_true(r.weight[0] == 0.7f && r.weight[1] == 0.3f && r.weight[3] == 0.4f &&
		    r.weight[4] == 1.5f);
	/* -1 slots carry weight 0, whatever the client sent */
	assert_true(r.weight[2] == 0.0f && r.weight[5] == 0.0f);
	expect_tpe(&r, (const int32_t[]){ 1, 1, 1, 1 });
	assert_int_equal(r.n_dropped, 0);
	ASSERT_CLOSE(r.aux_loss, 0, 0, 0);
	/* passthrough factor: the largest weight among the token's real slots */
	assert_true(r.passthrough_scale[0] == 0.7f);
	assert_true(r.passthrough_scale[1] == 0.4f);
	assert_true(r.passthrough_scale[2] == 1.5f);
	scratch_done(&s);
}

static void test_given_capacity(void **state)
{
	static const int32_t ex[8] = { 1, 0, 1, 2, 1, 0, 1, -1 };
	static const float w[8] = { 0.5f, 0.5f, 0.6f, 0.4f, 0.8f, 0.2f, 1.0f, 0.0f };
	struct route_given g = { ex, w };
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;

	(void)state;
	id_layer_init(&il, 3);
	router_config_init(&c);
	c.kind = ROUTER_GIVEN;
	c.top_k = 2;
	c.capacity_factor = 0.5; /* int(0.5 * 2 * 4 / 3) = 1 ... */
	c.min_capacity = 2;      /* ... raised to 2 */
	route_ok(&il.layer, &c, NULL, 4, &g, &s, &r);
	/* expert 1 asked by tokens 0, 1, 2, 3: the last two lose it */
	expect_experts(&r, (const int32_t[]){ 1, 0, 1, 2, -1, 0, -1, -1 });
	expect_tpe(&r, (const int32_t[]){ 2, 4, 1 });
	assert_int_equal(r.n_dropped, 2);
	expect_dropped_weights_zero(&r);
	scratch_done(&s);
}

static void expect_given_refused(const int32_t *ex, const float *w, const char *needle)
{
	struct route_given g = { ex, w };
	struct scratch s = { 0 };
	struct route_result r;
	struct diag d = { { 0 } };
	struct id_layer il;
	struct router_config c;

	id_layer_init(&il, 4);
	router_config_init(&c);
	c.kind = ROUTER_GIVEN;
	c.top_k = 2;
	ASSERT_ERRNO(router_route(&il.layer, &c, NULL, 2, ex ? &g : NULL, &s, &r, &d), EINVAL);
	if (!strstr(d.msg, needle))
		fail_msg("diag '%s' does not mention '%s'", d.msg, needle);
	scratch_done(&s);
}

static void test_given_invalid(void **state)
{
	static const float ok_w[4] = { 0.5f, 0.5f, 1.0f, 0.0f };

	(void)state;
	expect_given_refused((const int32_t[]){ 0, 1, 4, -1 }, ok_w, "expert 4");
	expect_given_refused((const int32_t[]){ 0, 1, 2, -2 }, ok_w, "expert -2");
	expect_given_refused((const int32_t[]){ 0, 1, 2, 3 },
			     (const float[]){ 0.5f, NAN, 1.0f, 0.0f }, "non-finite");
	expect_given_refused((const int32_t[]){ 0, 1, 2, 3 },
			     (const float[]){ 0.5f, 0.5f, INFINITY, 0.0f }, "non-finite");
	/* a NaN weight is refused even in a -1 slot */
	expect_given_refused((const int32_t[]){ 0, 1, 2, -1 },
			     (const float[]){ 0.5f, 0.5f, 1.0f, NAN }, "non-finite");
	expect_given_refused(NULL, NULL, "given");
}

/* --------------------------------------------------------------- config */

static void config_expect_equal(const struct router_config *a, const struct router_config *b)
{
	assert_int_equal(a->kind, b->kind);
	assert_int_equal(a->top_k, b->top_k);
	assert_true(a->capacity_factor == b->capacity_factor);
	assert_int_equal(a->min_capacity, b->min_capacity);
	assert_int_equal(a->drop, b->drop);
	assert_int_equal(a->scale, b->scale);
	assert_int_equal(a->normalize, b->normalize);
	assert_int_equal(a->score, b->score);
	assert_int_equal(a->top2_variant, b->top2_variant);
	assert_int_equal(a->second_policy, b->second_policy);
	assert_true(a->second_threshold == b->second_threshold);
	assert_true(a->seed == b->seed);
	assert_int_equal(a->base_mode, b->base_mode);
	assert_int_equal(a->base_sublayers, b->base_sublayers);
	assert_int_equal(a->groups, b->groups);
	assert_int_equal(a->experts_per_group, b->experts_per_group);
	assert_int_equal(a->priority, b->priority);
	assert_int_equal(a->activation, b->activation);
	assert_int_equal(a->nonfinite, b->nonfinite);
}

static void expect_set_refused(const char *key, const char *value)
{
	struct router_config c, before;
	struct diag d = { { 0 } };

	router_config_init(&c);
	before = c;
	ASSERT_ERRNO(router_config_set(&c, key, value, &d), EINVAL);
	if (!strstr(d.msg, key))
		fail_msg("diag '%s' does not name option %s", d.msg, key);
	/* the config is left as it was */
	config_expect_equal(&c, &before);
}

static void test_config_set(void **state)
{
	struct router_config c;
	struct diag d = { { 0 } };

	(void)state;
	router_config_init(&c);
	/* the defaults of the golden generator */
	assert_int_equal(c.kind, ROUTER_TOPK);
	assert_int_equal(c.top_k, 1);
	assert_true(c.capacity_factor == 0.0);
	assert_int_equal(c.activation, ACT_RELU);
	assert_int_equal(c.nonfinite, NONFINITE_FAIL);

	ASSERT_OK(router_config_set(&c, "router", "gshard", &d));
	ASSERT_OK(router_config_set(&c, "top_k", "3", &d));
	ASSERT_OK(router_config_set(&c, "capacity_factor", "1.25", &d));
	ASSERT_OK(router_config_set(&c, "min_capacity", "4", &d));
	ASSERT_OK(router_config_set(&c, "drop", "passthrough", &d));
	ASSERT_OK(router_config_set(&c, "scale", "input", &d));
	ASSERT_OK(router_config_set(&c, "normalize", "true", &d));
	ASSERT_OK(router_config_set(&c, "score", "sigmoid", &d));
	ASSERT_OK(router_config_set(&c, "top2_variant", "fairscale", &d));
	ASSERT_OK(router_config_set(&c, "second_policy", "threshold", &d));
	ASSERT_OK(router_config_set(&c, "second_threshold", "0.35", &d));
	ASSERT_OK(router_config_set(&c, "seed", "18446744073709551615", &d));
	ASSERT_OK(router_config_set(&c, "priority", "score", &d));
	ASSERT_OK(router_config_set(&c, "activation", "gelu_gated", &d));
	ASSERT_OK(router_config_set(&c, "nonfinite", "sanitize", &d));
	ASSERT_OK(router_config_set(&c, "groups", "2", &d));
	ASSERT_OK(router_config_set(&c, "experts_per_group", "4", &d));
	assert_int_equal(c.kind, ROUTER_GSHARD);
	assert_int_equal(c.top_k, 3);
	assert_true(c.capacity_factor == 1.25);
	assert_int_equal(c.min_capacity, 4);
	assert_int_equal(c.drop, DROP_PASSTHROUGH);
	assert_int_equal(c.scale, SCALE_INPUT);
	assert_true(c.normalize);
	assert_int_equal(c.score, SCORE_SIGMOID);
	assert_int_equal(c.top2_variant, TOP2_FAIRSCALE);
	assert_int_equal(c.second_policy, SECOND_THRESHOLD);
	assert_true(c.second_threshold == 0.35);
	assert_true(c.seed == UINT64_MAX);
	assert_int_equal(c.priority, PRIORITY_SCORE);
	assert_int_equal(c.activation, ACT_GELU_GATED);
	assert_int_equal(c.nonfinite, NONFINITE_SANITIZE);
	assert_int_equal(c.groups, 2);
	assert_int_equal(c.experts_per_group, 4);
	ASSERT_OK(router_config_set(&c, "normalize", "off", &d));
	assert_false(c.normalize);
	assert_string_equal(d.msg, "");

	/* slots per token */
	c.kind = ROUTER_SWITCH;
	assert_int_equal(router_config_slots(&c), 1);
	c.kind = ROUTER_GSHARD;
	assert_int_equal(router_config_slots(&c), 2);
	c.kind = ROUTER_HIERARCHICAL;
	assert_int_equal(router_config_slots(&c), 4);
	c.kind = ROUTER_TOPK;
	assert_int_equal(router_config_slots(&c), 3);
	assert_string_equal(router_kind_name(ROUTER_HIERARCHICAL), "hierarchical");
	assert_string_equal(activation_name(ACT_SILU_GATED), "silu_gated");
}

static void test_config_set_errors(void **state)
{
	struct router_config c;
	struct diag d = { { 0 } };

	(void)state;
	router_config_init(&c);
	ASSERT_ERRNO(router_config_set(&c, "no_such_option", "1", &d), ENOENT);
	ASSERT_ERRNO(router_config_set(&c, "moed.top_k", "1", &d), ENOENT);
	ASSERT_ERRNO(router_config_set(&c, "", "1", &d), ENOENT);

	expect_set_refused("router", "mixtral");
	expect_set_refused("router", "");
	expect_set_refused("router", "Switch"); /* names are case-sensitive */
	expect_set_refused("top_k", "0");
	expect_set_refused("top_k", "1025");
	expect_set_refused("top_k", "two");
	expect_set_refused("top_k", "2x");
	expect_set_refused("top_k", "-1");
	expect_set_refused("top_k", " 2");
	expect_set_refused("top_k", "");
	expect_set_refused("top_k", "99999999999999999999999");
	expect_set_refused("capacity_factor", "-1");
	expect_set_refused("capacity_factor", "nan");
	expect_set_refused("capacity_factor", "inf");
	expect_set_refused("capacity_factor", "1e7");
	expect_set_refused("capacity_factor", "1.5.2");
	expect_set_refused("second_threshold", "1.5");
	expect_set_refused("normalize", "maybe");
	expect_set_refused("normalize", "");
	expect_set_refused("drop", "none");
	expect_set_refused("activation", "swish");
	expect_set_refused("base_sublayers", "0");
	expect_set_refused("seed", "-5");
	expect_set_refused("nonfinite", "ignore");
}

static void expect_invalid(const struct router_config *c, uint32_t n_experts, const char *needle)
{
	struct diag d = { { 0 } };

	ASSERT_ERRNO(router_config_validate(c, n_experts, &d), EINVAL);
	if (needle && !strstr(d.msg, needle))
		fail_msg("diag '%s' does not mention '%s'", d.msg, needle);
}

static void test_config_validate(void **state)
{
	struct router_config c;
	struct diag d = { { 0 } };

	(void)state;
	router_config_init(&c);
	ASSERT_OK(router_config_validate(&c, 4, &d));
	expect_invalid(&c, 0, "no experts");

	/* top_k within 1..E */
	c.top_k = 4;
	ASSERT_OK(router_config_validate(&c, 4, &d));
	c.top_k = 5;
	expect_invalid(&c, 4, "top_k 5");
	c.kind = ROUTER_GIVEN;
	expect_invalid(&c, 4, "top_k 5");
	c.top_k = 0;
	expect_invalid(&c, 4, "top_k 0");

	/* gshard: two experts at least; fairscale has no second policy */
	router_config_init(&c);
	c.kind = ROUTER_GSHARD;
	expect_invalid(&c, 1, "2 experts");
	ASSERT_OK(router_config_validate(&c, 2, &d));
	c.top2_variant = TOP2_FAIRSCALE;
	ASSERT_OK(router_config_validate(&c, 2, &d));
	c.second_policy = SECOND_NONE;
	expect_invalid(&c, 4, "fairscale");
	c.second_policy = SECOND_THRESHOLD;
	expect_invalid(&c, 4, "fairscale");
	c.top2_variant = TOP2_MESHTF;
	ASSERT_OK(router_config_validate(&c, 4, &d));

	/* hierarchical: X * Y == E, each >= 2, dropless */
	router_config_init(&c);
	c.kind = ROUTER_HIERARCHICAL;
	c.groups = 2;
	c.experts_per_group = 4;
	ASSERT_OK(router_config_validate(&c, 8, &d));
	expect_invalid(&c, 6, "hierarchical");
	c.experts_per_group = 3;
	expect_invalid(&c, 8, "hierarchical");
	c.groups = 1;
	c.experts_per_group = 8;
	expect_invalid(&c, 8, "hierarchical");
	c.groups = 2;
	c.experts_per_group = 4;
	c.capacity_factor = 1.0;
	expect_invalid(&c, 8, "dropless");

	/* base balanced is dropless */
	router_config_init(&c);
	c.kind = ROUTER_BASE;
	c.base_mode = BASE_BALANCED;
	ASSERT_OK(router_config_validate(&c, 4, &d));
	c.capacity_factor = 1.0;
	expect_invalid(&c, 4, "capacity_factor");

	/* passthrough scales by a softmax probability that sigmoid scores lack */
	router_config_init(&c);
	c.score = SCORE_SIGMOID;
	c.drop = DROP_PASSTHROUGH;
	expect_invalid(&c, 4, "passthrough");
	c.scale = SCALE_NONE;
	ASSERT_OK(router_config_validate(&c, 4, &d));

	/* router_route refuses what validate refuses, before touching x */
	{
		struct id_layer il;
		struct scratch s = { 0 };
		struct route_result r;

		id_layer_init(&il, 3);
		router_config_init(&c);
		c.top_k = 4;
		diag_clear(&d);
		ASSERT_ERRNO(router_route(&il.layer, &c, NULL, 1, NULL, &s, &r, &d), EINVAL);
		assert_non_null(strstr(d.msg, "top_k"));
		scratch_done(&s);
	}
}

static void test_route_needs_router_weight(void **state)
{
	static const float x[4] = { 1, 2, 3, 4 };
	struct id_layer il;
	struct router_config c;
	struct scratch s = { 0 };
	struct route_result r;
	struct diag d = { { 0 } };

	(void)state;
	id_layer_init(&il, 4);
	il.layer.router_w = NULL;
	router_config_init(&c);
	ASSERT_ERRNO(router_route(&il.layer, &c, x, 1, NULL, &s, &r, &d), EINVAL);
	assert_non_null(strstr(d.msg, "router weight"));
	/* base and hierarchical need their own tensors */
	c.kind = ROUTER_HIERARCHICAL;
	c.groups = 2;
	c.experts_per_group = 2;
	diag_clear(&d);
	ASSERT_ERRNO(router_route(&il.layer, &c, x, 1, NULL, &s, &r, &d), EINVAL);
	assert_non_null(strstr(d.msg, "outer"));
	scratch_done(&s);
}

/* --------------------------------------------------------------- losses */

static void test_z_loss_naive(void **state)
{
	enum { T = 7, E = 6, D = 5 };
	struct scratch s = { 0 };
	struct route_result r;
	struct moe_layer L = { 0 };
	struct router_config c;
	float x[T][D], w[E][D], b[E];
	uint64_t seed = 3;
	double z = 0;

	(void)state;
	/* a real (non-identity) router with a bias, large logits in row 0 */
	for (uint32_t t = 0; t < T; t++)
		for (uint32_t i = 0; i < D; i++)
			x[t][i] = rng_uniform(&seed, -2, 2) * (t == 0 ? 40.0f : 1.0f);
	for (uint32_t e = 0; e < E; e++) {
		for (uint32_t i = 0; i < D; i++)
			w[e][i] = rng_uniform(&seed, -1, 1);
		b[e] = rng_uniform(&seed, -0.5f, 0.5f);
	}
	L.d_model = D;
	L.n_experts = E;
	L.router_w = &w[0][0];
	L.router_b = b;
	router_config_init(&L.router);
	c = L.router;
	c.top_k = 2;
	for (uint32_t t = 0; t < T; t++) {
		double l[E], max = -INFINITY, sum = 0, lse;

		for (uint32_t e = 0; e < E; e++) {
			l[e] = b[e];
			for (uint32_t i = 0; i < D; i++)
				l[e] += (double)x[t][i] * w[e][i];
			max = fmax(max, l[e]);
		}
		for (uint32_t e = 0; e < E; e++)
			sum += exp(l[e] - max);
		lse = max + log(sum);
		z += lse * lse / T;
	}
	for (int kind = 0; kind < 3; kind++) {
		c.kind = kind == 0 ? ROUTER_TOPK : kind == 1 ? ROUTER_SWITCH : ROUTER_GSHARD;
		scratch_reset(&s);
		route_ok(&L, &c, &x[0][0], T, NULL, &s, &r);
		assert_true(r.has_z_loss);
		/* logits come from a float32 GEMM: relative 1e-5 of a large z */
		ASSERT_CLOSE(r.z_loss, z, 1e-6, 1e-5);
		assert_true(isfinite(r.aux_loss));
	}
	/* a direct check of gate_z_loss on exact logits: two rows */
	{
		static const float lg[2][2] = { { 0.0f, 0.0f }, { 100.0f, 0.0f } };
		double want = (log(2.0) * log(2.0) + pow(100 + log1p(exp(-100.0)), 2)) / 2;

		ASSERT_CLOSE(gate_z_loss(&lg[0][0], 2, 2), want, 1e-12, 1e-12);
	}
	scratch_done(&s);
}

/*
 * DeepSeek's routing extras on one token with sigmoid scores
 * s = σ(2, -1, 1.5, 1.4) = (0.881, 0.269, 0.818, 0.802), experts in groups
 * {0, 1} and {2, 3}: plain top-2 is {0, 2}; keeping the best group by its
 * two best (V3: 1.150 vs 1.620) gives {2, 3}, by its best (V2: 0.881 vs
 * 0.818) gives {0, 1}; a selection bias of 0.2 on expert 3 makes it the
 * first choice while its weight stays its unbiased score.
 */
static void test_topk_deepseek_groups_bias_scaling(void **state)
{
	static const float x[4] = { 2.0f, -1.0f, 1.5f, 1.4f };
	const float bias[4] = { 0, 0, 0, 0.2f };
	struct scratch s = { 0 };
	struct route_result r;
	struct id_layer il;
	struct router_config c;
	double sg[4];

	(void)state;
	for (int e = 0; e < 4; e++)
		sg[e] = 1.0 / (1.0 + exp(-(double)x[e]));
	id_layer_init(&il, 4);
	router_config_init(&c);
	c.kind = ROUTER_TOPK;
	c.top_k = 2;
	c.score = SCORE_SIGMOID;

	route_ok(&il.layer, &c, x, 1, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 0, 2 });

	c.expert_groups = 2;
	c.topk_groups = 1;
	c.group_score = GROUP_SCORE_TOP2;
	c.normalize = true;
	c.routed_scaling = 2.5;
	route_ok(&il.layer, &c, x, 1, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 2, 3 });
	ASSERT_CLOSE(r.weight[0], 2.5 * sg[2] / (sg[2] + sg[3]), 1e-7, 1e-6);
	ASSERT_CLOSE(r.weight[1], 2.5 * sg[3] / (sg[2] + sg[3]), 1e-7, 1e-6);

	c.group_score = GROUP_SCORE_MAX;
	route_ok(&il.layer, &c, x, 1, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 0, 1 });

	c.expert_groups = 0;
	c.normalize = false;
	c.routed_scaling = 1.0;
	il.layer.selection_bias = bias;
	route_ok(&il.layer, &c, x, 1, NULL, &s, &r);
	expect_experts(&r, (const int32_t[]){ 3, 0 });
	ASSERT_CLOSE(r.weight[0], sg[3], 1e-7, 1e-6);
	ASSERT_CLOSE(r.weight[1], sg[0], 1e-7, 1e-6);
	expect_tpe(&r, (const int32_t[]){ 1, 0, 0, 1 });

	/* groups that cannot hold top_k experts, or do not divide E */
	c.expert_groups = 2;
	c.topk_groups = 1;
	c.top_k = 3;
	ASSERT_ERRNO(router_config_validate(&c, 4, NULL), EINVAL);
	c.top_k = 2;
	c.expert_groups = 3;
	ASSERT_ERRNO(router_config_validate(&c, 4, NULL), EINVAL);
	scratch_done(&s);
}

/* ----------------------------------------------------- statistics by range */

enum { RS_E = 8, RS_X = 2, RS_Y = 4, RS_T = 12 };

/* Route each of three runs of x alone, then all of x: router_stats() of each
 * run within the whole must be bitwise the run's own statistics. */
static void expect_ranges_as_alone(const char *what, const struct moe_layer *L,
				   const struct router_config *c, const float *x)
{
	static const uint32_t bounds[] = { 0, 4, 5, 12 };
	struct scratch s = { 0 };
	struct route_result r;
	struct route_stats alone[3], st;

	for (uint32_t i = 0; i < 3; i++) {
		route_ok(L, c, x + (size_t)bounds[i] * RS_E, bounds[i + 1] - bounds[i], NULL, &s,
			 &r);
		alone[i] = (struct route_stats){ .n_dropped = r.n_dropped, .aux_loss = r.aux_loss,
						 .z_loss = r.z_loss, .has_z_loss = r.has_z_loss };
		scratch_reset(&s);
	}
	route_ok(L, c, x, RS_T, NULL, &s, &r);
	for (uint32_t i = 0; i < 3; i++) {
		ASSERT_OK(router_stats(c, &r, bounds[i], bounds[i + 1], &s, &st));
		if (st.n_dropped != alone[i].n_dropped || st.has_z_loss != alone[i].has_z_loss ||
		    memcmp(&st.aux_loss, &alone[i].aux_loss, sizeof(double)) ||
		    memcmp(&st.z_loss, &alone[i].z_loss, sizeof(double)))
			fail_msg("%s, tokens [%u, %u): aux %a z %a, alone aux %a z %a", what,
				 bounds[i], bounds[i + 1], st.aux_loss, st.z_loss,
				 alone[i].aux_loss, alone[i].z_loss);
	}
	/* the whole batch's own statistics are router_stats() over [0, T) */
	ASSERT_OK(router_stats(c, &r, 0, RS_T, &s, &st));
	assert_memory_equal(&st.aux_loss, &r.aux_loss, sizeof(double));
	assert_memory_equal(&st.z_loss, &r.z_loss, sizeof(double));
	ASSERT_ERRNO(router_stats(c, &r, 3, 3, &s, &st), EINVAL);
	ASSERT_ERRNO(router_stats(c, &r, 0, RS_T + 1, &s, &st), EINVAL);
	scratch_done(&s);
}

static void test_stats_ranges_per_token_routers(void **state)
{
	struct id_layer il;
	struct base_sublayer sub = { 0 };
	struct moe_expert ex[RS_E] = { { .sublayers = &sub } };
	float x[RS_T * RS_E], outer[RS_X * RS_E], inner[RS_X * RS_Y * RS_E];
	struct router_config c;
	uint64_t seed = 7;

	(void)state;
	id_layer_init(&il, RS_E);
	for (size_t i = 0; i < RS_T * RS_E; i++)
		x[i] = rng_uniform(&seed, -2, 2);
	for (size_t i = 0; i < RS_X * RS_E; i++)
		outer[i] = rng_uniform(&seed, -1, 1);
	for (size_t i = 0; i < RS_X * RS_Y * RS_E; i++)
		inner[i] = rng_uniform(&seed, -1, 1);
	il.layer.outer_w = outer;
	il.layer.inner_w = inner;
	il.layer.centroids = il.w;
	il.layer.experts = ex;

	c = il.layer.router;
	c.kind = ROUTER_SWITCH;
	c.top_k = 1;
	expect_ranges_as_alone("switch", &il.layer, &c, x);
	c.kind = ROUTER_TOPK;
	c.top_k = 3;
	expect_ranges_as_alone("topk softmax", &il.layer, &c, x);
	c.score = SCORE_SIGMOID;
	c.scale = SCALE_NONE;
	c.normalize = true;
	expect_ranges_as_alone("topk sigmoid", &il.layer, &c, x);
	c = il.layer.router;
	c.kind = ROUTER_GSHARD;
	c.top_k = 2;
	c.top2_variant = TOP2_MESHTF;
	c.second_policy = SECOND_THRESHOLD;
	c.second_threshold = 0.3;
	expect_ranges_as_alone("gshard meshtf", &il.layer, &c, x);
	c.top2_variant = TOP2_FAIRSCALE;
	c.second_policy = SECOND_ALL;
	expect_ranges_as_alone("gshard fairscale", &il.layer, &c, x);
	c = il.layer.router;
	c.kind = ROUTER_HIERARCHICAL;
	c.top_k = 4;
	c.groups = RS_X;
	c.experts_per_group = RS_Y;
	expect_ranges_as_alone("hierarchical", &il.layer, &c, x);
	c = il.layer.router;
	c.kind = ROUTER_BASE;
	c.base_mode = BASE_GREEDY;
	expect_ranges_as_alone("base greedy", &il.layer, &c, x);
}

/* A range's drops are the drops of its tokens within the batch's routing. */
static void test_stats_range_drops(void **state)
{
	struct id_layer il;
	struct router_config c;
	struct scratch s = { 0 };
	struct route_result r;
	struct route_stats st;
	uint32_t total = 0;

	(void)state;
	id_layer_init(&il, 4);
	c = il.layer.router;
	c.kind = ROUTER_SWITCH;
	c.top_k = 1;
	c.capacity_factor = 1.0; /* capacity 1: expert 2 keeps token 0, drops the rest */
	assert_false(router_config_per_token(&c));
	route_ok(&il.layer, &c, &all_to_two[0][0], 5, NULL, &s, &r);
	for (uint32_t t = 0; t < 5; t++) {
		ASSERT_OK(router_stats(&c, &r, t, t + 1, &s, &st));
		total += st.n_dropped;
	}
	ASSERT_EQ(total, r.n_dropped);
	ASSERT_EQ(r.n_dropped, 4);
	ASSERT_OK(router_stats(&c, &r, 0, 1, &s, &st));
	ASSERT_EQ(st.n_dropped, 0);
	ASSERT_OK(router_stats(&c, &r, 1, 3, &s, &st));
	ASSERT_EQ(st.n_dropped, 2);
	scratch_done(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_topk_deepseek_groups_bias_scaling),
		cmocka_unit_test(test_stats_ranges_per_token_routers),
		cmocka_unit_test(test_stats_range_drops),
		cmocka_unit_test(test_capacity_of),
		cmocka_unit_test(test_switch_capacity_one_token_order),
		cmocka_unit_test(test_switch_priority_score),
		cmocka_unit_test(test_topk_priority_score_k_leads),
		cmocka_unit_test(test_switch_argmax_and_tie),
		cmocka_unit_test(test_topk_k_equals_e),
		cmocka_unit_test(test_topk_normalize),
		cmocka_unit_test(test_topk_sigmoid),
		cmocka_unit_test(test_topk_capacity_order),
		cmocka_unit_test(test_gshard_variants_tight_capacity),
		cmocka_unit_test(test_gshard_second_policy),
		cmocka_unit_test(test_gshard_random_policy),
		cmocka_unit_test(test_given_valid),
		cmocka_unit_test(test_given_capacity),
		cmocka_unit_test(test_given_invalid),
		cmocka_unit_test(test_config_set),
		cmocka_unit_test(test_config_set_errors),
		cmocka_unit_test(test_config_validate),
		cmocka_unit_test(test_route_needs_router_weight),
		cmocka_unit_test(test_z_loss_naive),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
