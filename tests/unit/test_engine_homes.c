/* SPDX-License-Identifier: MIT */
/*
 * Tests of the engine with experts' homes (engine_batch.homes) on NUMA
 * pools of hand-built topologies (1 node of CPUs 0-1; 2 nodes of CPU 0 and
 * CPU 1; 4 simulated nodes reusing them): the output is bitwise the one of
 * the plain engine without homes whatever the nodes, the copies (1 to 3 per
 * expert, each a separately allocated copy of the weights) and stealing;
 * the copies' weights are really the ones read (the layer's own weights
 * poisoned with NaN, the copies good: the output is finite and unchanged);
 * bad homes are refused with -EINVAL before any work, and a node beyond the
 * pool's computes on node 0.
 *
 * The layer is shaped so that experts have several tiles in both phases
 * (d_ff 1040: 3 column tiles up; over 256 rows per expert: 2 row tiles),
 * which is what spreads one expert over its copies.
 */
#include "test_assert.h"
#include "test_layer.h"
#include "test_topo.h"

#include <errno.h>
#include <string.h>

#include "engine/engine.h"
#include "numa/topology.h"

#define DM 64 /* d_model */
#define FF 1040
#define SHARED_FF 520
#define N_EXPERTS 4
#define K 2
#define NT 600 /* tokens */
#define MAX_REPLICAS 2 /* besides the layer's own weights */

static struct mem_layer *layer;
static float *x;
static float *reference; /* the plain engine without homes: [NT][DM] */

/* Separately allocated copies of each expert's weights: [N_EXPERTS][MAX_REPLICAS]. */
static struct ffn_weights replica[N_EXPERTS][MAX_REPLICAS];
static float *replica_owned[N_EXPERTS * MAX_REPLICAS * 5];
static unsigned n_replica_owned;

/* A fresh copy of @n floats of @src (NULL stays NULL). */
static const float *dup_floats(const float *src, size_t n)
{
	float *p;

	if (!src)
		return NULL;
	p = malloc(sizeof(float) * n);
	assert_non_null(p);
	memcpy(p, src, sizeof(float) * n);
	replica_owned[n_replica_owned++] = p;
	return p;
}

static void replica_make(struct ffn_weights *r, const struct ffn_weights *f)
{
	*r = (struct ffn_weights){
		.w1 = dup_floats(f->w1, (size_t)f->d_ff * DM),
		.w2 = dup_floats(f->w2, (size_t)DM * f->d_ff),
		.w3 = dup_floats(f->w3, (size_t)f->d_ff * DM),
		.b1 = dup_floats(f->b1, f->d_ff),
		.b2 = dup_floats(f->b2, DM),
		.d_ff = f->d_ff,
	};
}

/*
 * Homes: expert e has 1 + (e + shift) % 3 copies (the layer's own weights
 * first, then replicas), copy c on node (e + c) % n_nodes.
 */
static void homes_make(struct expert_home *h, uint32_t n_nodes, uint32_t shift)
{
	for (uint32_t e = 0; e < N_EXPERTS; e++) {
		h[e] = (struct expert_home){ .n_copies = 1 + (e + shift) % 3 };
		for (uint32_t c = 0; c < h[e].n_copies; c++) {
			h[e].copy[c].node = (e + c) % n_nodes;
			h[e].copy[c].ffn = c == 0 ? &layer->ex[e].ffn : &replica[e][c - 1];
		}
	}
}

static int forward(struct engine *eng, const struct moe_layer *L,
		   const struct expert_home *homes, float *out, struct diag *d)
{
	struct router_config c = topk_silu_config(K);
	struct engine_batch b = { .x = x, .n_tokens = NT, .homes = homes, .output = out };

	memset(out, 0xa5, sizeof(float) * NT * DM); /* the engine must write every element */
	return engine_forward(eng, L, &c, &b, d);
}

static void forward_ok(struct engine *eng, const struct moe_layer *L,
		       const struct expert_home *homes, float *out)
{
	struct diag d = { { 0 } };
	int r = forward(eng, L, homes, out, &d);

	if (r < 0)
		fail_msg("engine_forward: %s (%s)", d.msg, strerror(-r));
}

static void expect_reference(const float *out, const char *what)
{
	if (memcmp(out, reference, sizeof(float) * NT * DM) != 0) {
		for (size_t i = 0; i < (size_t)NT * DM; i++)
			if (memcmp(&out[i], &reference[i], sizeof(float)) != 0)
				fail_msg("%s: output [%zu][%zu] = %a, without homes %a", what,
					 i / DM, i % DM, (double)out[i], (double)reference[i]);
	}
}

static struct engine *engine_on(const struct topology *t, bool steal)
{
	struct engine_opts o;
	struct engine *eng = NULL;
	struct diag d = { { 0 } };
	int r;

	engine_opts_init(&o);
	o.topo = t;
	o.steal = steal;
	r = engine_new(&o, &eng, &d);
	if (r < 0)
		fail_msg("engine_new: %s (%s)", d.msg, strerror(-r));
	return eng;
}

/* ---------------------------------------------------------------- tests */

/* 1, 2 and 4 nodes, with and without stealing, three spreads of copies. */
static void test_homes_bitwise(void **state)
{
	static const struct {
		uint32_t n_nodes;
		bool steal;
	} cases[] = { { 1, false }, { 2, false }, { 2, true }, { 4, false }, { 4, true } };
	float *out = malloc(sizeof(float) * NT * DM);

	(void)state;
	assert_non_null(out);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct topology t;
		struct engine *eng;

		test_topo_make(&t, cases[i].n_nodes);
		eng = engine_on(&t, cases[i].steal);
		forward_ok(eng, &layer->L, NULL, out);
		expect_reference(out, "nodes pool, no homes");
		for (uint32_t shift = 0; shift < 3; shift++) {
			struct expert_home h[N_EXPERTS];
			char what[64];

			homes_make(h, cases[i].n_nodes, shift);
			forward_ok(eng, &layer->L, h, out);
			snprintf(what, sizeof(what), "%u nodes%s, copies shift %u",
				 cases[i].n_nodes, cases[i].steal ? " steal" : "", shift);
			expect_reference(out, what);
		}
		engine_free(eng);
	}
	free(out);
}

/*
 * The copies' weights are the ones read: the layer's own expert weights
 * (w1 of every expert) are NaN, every copy is a good replica. Without
 * homes the output is not finite (-ERANGE); with homes it is the reference.
 * On the plain pool (one node) and on 2 nodes.
 */
static void test_homes_copies_are_read(void **state)
{
	struct mem_layer poisoned = *layer;
	float *bad = malloc(sizeof(float) * FF * DM);
	float *out = malloc(sizeof(float) * NT * DM);
	struct engine *plain = NULL, *two;
	struct engine_opts o;
	struct topology t;
	struct diag d = { { 0 } };

	(void)state;
	assert_true(bad && out);
	for (size_t i = 0; i < (size_t)FF * DM; i++)
		bad[i] = NAN;
	poisoned.L.experts = poisoned.ex;
	for (uint32_t e = 0; e < N_EXPERTS; e++)
		poisoned.ex[e].ffn.w1 = bad;
	engine_opts_init(&o);
	o.n_workers = 2;
	ASSERT_OK(engine_new(&o, &plain, NULL));
	test_topo_make(&t, 2);
	two = engine_on(&t, false);

	for (size_t i = 0; i < 2; i++) {
		struct engine *eng = i ? two : plain;
		struct expert_home h[N_EXPERTS];

		ASSERT_ERRNO(forward(eng, &poisoned.L, NULL, out, &d), ERANGE);
		for (uint32_t e = 0; e < N_EXPERTS; e++) {
			h[e] = (struct expert_home){ .n_copies = 1 + e % 2 };
			for (uint32_t c = 0; c < h[e].n_copies; c++)
				h[e].copy[c] = (struct expert_copy){ .node = (e + c) % 2,
								     .ffn = &replica[e][c] };
		}
		forward_ok(eng, &poisoned.L, h, out);
		expect_reference(out, i ? "2 nodes, poisoned layer" : "plain, poisoned layer");
	}
	engine_free(two);
	engine_free(plain);
	free(out);
	free(bad);
}

/* Bad homes fail before any work with -EINVAL; a node beyond the pool is node 0. */
static void test_homes_refused(void **state)
{
	struct ffn_weights short_ff = layer->ex[1].ffn, no_w3 = layer->ex[1].ffn,
			   no_bias = layer->ex[1].ffn;
	float *out = malloc(sizeof(float) * NT * DM);
	struct expert_home h[N_EXPERTS];
	struct topology t;
	struct engine *eng;
	struct diag d = { { 0 } };

	(void)state;
	assert_non_null(out);
	short_ff.d_ff = FF - 8;
	no_w3.w3 = NULL;
	no_bias.b1 = NULL;
	test_topo_make(&t, 2);
	eng = engine_on(&t, false);

	homes_make(h, 2, 0);
	h[2].n_copies = 0;
	ASSERT_ERRNO(forward(eng, &layer->L, h, out, &d), EINVAL);
	assert_non_null(strstr(d.msg, "expert 2"));
	h[2].n_copies = PLACEMENT_MAX_COPIES + 1;
	ASSERT_ERRNO(forward(eng, &layer->L, h, out, &d), EINVAL);
	homes_make(h, 2, 0);
	h[1].copy[0].ffn = NULL;
	ASSERT_ERRNO(forward(eng, &layer->L, h, out, &d), EINVAL);
	h[1].copy[0].ffn = &short_ff;
	ASSERT_ERRNO(forward(eng, &layer->L, h, out, &d), EINVAL);
	h[1].copy[0].ffn = &no_w3;
	ASSERT_ERRNO(forward(eng, &layer->L, h, out, &d), EINVAL);
	h[1].copy[0].ffn = &no_bias;
	ASSERT_ERRNO(forward(eng, &layer->L, h, out, &d), EINVAL);

	/* nodes 2 and 7 do not exist in a 2-node pool: node 0 computes them */
	homes_make(h, 2, 1);
	h[0].copy[0].node = 7;
	h[3].copy[h[3].n_copies - 1].node = 2;
	forward_ok(eng, &layer->L, h, out);
	expect_reference(out, "nodes beyond the pool");
	engine_free(eng);
	free(out);
}

/* ---------------------------------------------------------------- setup */

static int group_setup(void **state)
{
	const struct layer_spec sp = { .d = DM, .ff = FF, .E = N_EXPERTS, .gated = true, .bias = true,
				       .shared_ff = SHARED_FF, .shared_gate = true, .seed = 11 };
	struct engine_opts o;
	struct engine *plain = NULL;

	(void)state;
	layer = mem_layer_new(&sp);
	x = input_new(NT, DM, 5);
	reference = malloc(sizeof(float) * NT * DM);
	assert_non_null(reference);
	for (uint32_t e = 0; e < N_EXPERTS; e++)
		for (uint32_t r = 0; r < MAX_REPLICAS; r++)
			replica_make(&replica[e][r], &layer->ex[e].ffn);
	engine_opts_init(&o);
	o.n_workers = 2;
	if (engine_new(&o, &plain, NULL) < 0)
		return -1;
	forward_ok(plain, &layer->L, NULL, reference);
	engine_free(plain);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	for (unsigned i = 0; i < n_replica_owned; i++)
		free(replica_owned[i]);
	free(reference);
	free(x);
	mem_layer_free(layer);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_homes_bitwise),
		cmocka_unit_test(test_homes_copies_are_read),
		cmocka_unit_test(test_homes_refused),
	};

	if (!test_topo_cpus_allowed()) {
		fprintf(stderr, "test_engine_homes: needs CPUs 0 and 1 (the hand-built "
				"topologies use them), skipping\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
