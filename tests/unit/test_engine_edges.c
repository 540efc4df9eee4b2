/* SPDX-License-Identifier: MIT */
/*
 * Tests of engine_forward at its edges, on small layers generated in memory
 * and checked against a naive reference of the whole layer written here in
 * double (top-k softmax routing with capacity in token order, every
 * activation, biases, the three scale modes, both drop policies and a shared
 * expert with or without its sigmoid gate): one token, one expert, k = E,
 * capacity above T and far below it, every token to one expert (so the others
 * receive nothing), row and column tiling of large experts, the result on 1,
 * 2 and 4 workers and with every matmul kernel, non-finite input (fail and
 * sanitize) with the engine usable afterwards, weights that overflow,
 * refused arguments, and the statistics of the segments of a merged batch
 * against each segment's batch alone (bitwise, every mergeable router).
 */
#include "test_assert.h"
#include "test_layer.h"

#include <errno.h>
#include <float.h>
#include <stdbool.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "util/rng.h"
#include "model/model.h"
#include "router/router.h"

/* ---------------------------------------------------------------- helpers */

static struct engine *engine_1, *engine_2, *engine_4;

static struct router_config topk_config(uint32_t k, bool normalize, enum activation act)
{
	struct router_config c;

	router_config_init(&c);
	c.kind = ROUTER_TOPK;
	c.top_k = k;
	c.normalize = normalize;
	c.activation = act;
	return c;
}

/* ------------------------------------------------------ naive reference */

static double act_ref(enum activation a, double v)
{
	switch (a) {
	case ACT_RELU:
		return v > 0 ? v : 0;
	case ACT_GELU:
	case ACT_GELU_GATED:
		return 0.5 * v * (1 + erf(v / sqrt(2.0)));
	case ACT_GELU_TANH:
		return 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
	case ACT_SILU_GATED:
		return v / (1 + exp(-v));
	}
	return NAN;
}

/* y[d] = W2 · act(W1·x + b1 [, ⊙ W3·x]) + b2, all in double. */
static void ffn_ref(const struct ffn_weights *f, enum activation act, uint32_t d, const double *x,
		    double *y)
{
	double *h = malloc(sizeof(double) * f->d_ff);

	assert_non_null(h);
	for (uint32_t o = 0; o < f->d_ff; o++) {
		double a = f->b1 ? f->b1[o] : 0, g = 0;

		for (uint32_t i = 0; i < d; i++)
			a += (double)ffn_weight_at(f, f->w1, (size_t)o * d + i) * x[i];
		if (act == ACT_SILU_GATED || act == ACT_GELU_GATED) {
			for (uint32_t i = 0; i < d; i++)
				g += (double)ffn_weight_at(f, f->w3, (size_t)o * d + i) * x[i];
			h[o] = act_ref(act, a) * g;
		} else {
			h[o] = act_ref(act, a);
		}
	}
	for (uint32_t o = 0; o < d; o++) {
		double s = f->b2 ? f->b2[o] : 0;

		for (uint32_t j = 0; j < f->d_ff; j++)
			s += (double)ffn_weight_at(f, f->w2, (size_t)o * f->d_ff + j) * h[j];
		y[o] = s;
	}
	free(h);
}

struct ref_result {
	double *y;      /* [T][d] */
	int32_t *idx;   /* [T][k] */
	double *w;      /* [T][k] */
	double *top1;   /* [T]: the top-1 probability */
	int32_t tpe[MAX_E];
	uint32_t n_dropped;
	double aux;
};

static void ref_free(struct ref_result *r)
{
	free(r->y);
	free(r->idx);
	free(r->w);
	free(r->top1);
}

/*
 * The layer as the README defines it, for a softmax top-k router: route in
 * double, capacity max(int(cf·k·T/E), min_capacity, 1) granted in (token,
 * slot) order, y = Σ g·E(x) / Σ E(g·x) / Σ E(x), drop zero or passthrough
 * (x times its top-1 probability unless unscaled), plus σ(x·g_s)·S(x).
 */
static void ref_forward(const struct moe_layer *L, const struct router_config *c, const float *x,
			uint32_t T, struct ref_result *r)
{
	const uint32_t d = L->d_model, E = L->n_experts, k = c->top_k;
	uint32_t cap = UINT32_MAX, seen[MAX_E] = { 0 };
	double *xt = malloc(sizeof(double) * d), *ey = malloc(sizeof(double) * d);
	double mean_p[MAX_E] = { 0 };

	assert_true(c->kind == ROUTER_TOPK && c->score == SCORE_SOFTMAX);
	*r = (struct ref_result){ 0 };
	r->y = calloc((size_t)T * d, sizeof(double));
	r->idx = malloc(sizeof(int32_t) * T * k);
	r->w = calloc((size_t)T * k, sizeof(double));
	r->top1 = malloc(sizeof(double) * T);
	assert_true(xt && ey && r->y && r->idx && r->w && r->top1);
	if (c->capacity_factor > 0) {
		double q = c->capacity_factor * k * T / E;

		cap = (uint32_t)q;
		if (cap < c->min_capacity)
			cap = c->min_capacity;
		if (cap == 0)
			cap = 1;
	}
	for (uint32_t t = 0; t < T; t++) {
		double logit[MAX_E], p[MAX_E], max = -INFINITY, sum = 0, ksum = 0;
		uint32_t ch[MAX_E] = { 0 };
		bool any = false;

		for (uint32_t e = 0; e < E; e++) {
			logit[e] = L->router_b ? L->router_b[e] : 0;
			for (uint32_t i = 0; i < d; i++)
				logit[e] += (double)x[(size_t)t * d + i] * L->router_w[(size_t)e * d + i];
			max = fmax(max, logit[e]);
		}
		for (uint32_t e = 0; e < E; e++)
			sum += exp(logit[e] - max);
		for (uint32_t e = 0; e < E; e++) {
			p[e] = exp(logit[e] - max) / sum;
			mean_p[e] += p[e] / T;
		}
		for (uint32_t j = 0; j < k; j++) {
			uint32_t best = UINT32_MAX;

			for (uint32_t e = 0; e < E; e++) {
				bool taken = false;

				for (uint32_t q = 0; q < j; q++)
					taken |= ch[q] == e;
				if (!taken && (best == UINT32_MAX || p[e] > p[best]))
					best = e;
			}
			ch[j] = best;
			ksum += p[best];
		}
		r->top1[t] = p[ch[0]];
		for (uint32_t i = 0; i < d; i++)
			xt[i] = x[(size_t)t * d + i];
		for (uint32_t j = 0; j < k; j++) {
			size_t slot = (size_t)t * k + j;
			double g = c->normalize ? p[ch[j]] / ksum : p[ch[j]];

			r->tpe[ch[j]]++;
			if (seen[ch[j]]++ >= cap) {
				r->idx[slot] = -1;
				r->n_dropped++;
				continue;
			}
			any = true;
			r->idx[slot] = (int32_t)ch[j];
			r->w[slot] = g;
			if (c->scale == SCALE_INPUT) {
				double *gx = malloc(sizeof(double) * d);

				assert_non_null(gx);
				for (uint32_t i = 0; i < d; i++)
					gx[i] = (double)(float)g * xt[i];
				ffn_ref(&L->experts[ch[j]].ffn, c->activation, d, gx, ey);
				free(gx);
			} else {
				ffn_ref(&L->experts[ch[j]].ffn, c->activation, d, xt, ey);
			}
			for (uint32_t i = 0; i < d; i++)
				r->y[(size_t)t * d + i] += (c->scale == SCALE_OUTPUT ? g : 1) * ey[i];
		}
		if (!any && c->drop == DROP_PASSTHROUGH)
			for (uint32_t i = 0; i < d; i++)
				r->y[(size_t)t * d + i] =
					xt[i] * (c->scale == SCALE_NONE ? 1 : p[ch[0]]);
		if (L->has_shared) {
			double gate = 1;

			if (L->shared_gate) {
				double a = 0;

				for (uint32_t i = 0; i < d; i++)
					a += xt[i] * L->shared_gate[i];
				gate = 1 / (1 + exp(-a));
			}
			ffn_ref(&L->shared, c->activation, d, xt, ey);
			for (uint32_t i = 0; i < d; i++)
				r->y[(size_t)t * d + i] += gate * ey[i];
		}
	}
	for (uint32_t e = 0; e < E; e++)
		r->aux += r->tpe[e] * mean_p[e];
	r->aux *= (double)E / ((double)T * k);
	free(xt);
	free(ey);
}

/* An engine batch with every output buffer. */
struct batch {
	struct engine_batch b;
	uint32_t d, k, E;
};

static void batch_init(struct batch *bt, const float *x, uint32_t T, uint32_t d, uint32_t k,
		       uint32_t E)
{
	*bt = (struct batch){ .d = d, .k = k, .E = E };
	bt->b.x = x;
	bt->b.n_tokens = T;
	bt->b.output = malloc(sizeof(float) * T * d);
	bt->b.expert_index = malloc(sizeof(int32_t) * T * k);
	bt->b.expert_weight = malloc(sizeof(float) * T * k);
	bt->b.tokens_per_expert = malloc(sizeof(int32_t) * E);
	assert_true(bt->b.output && bt->b.expert_index && bt->b.expert_weight &&
		    bt->b.tokens_per_expert);
	/* garbage: the engine must write every element */
	memset(bt->b.output, 0xa5, sizeof(float) * T * d);
}

static void batch_done(struct batch *bt)
{
	free(bt->b.output);
	free(bt->b.expert_index);
	free(bt->b.expert_weight);
	free(bt->b.tokens_per_expert);
}

static void forward_ok(struct engine *e, const struct moe_layer *L, const struct router_config *c,
		       struct batch *bt)
{
	struct diag d = { { 0 } };
	int r = engine_forward(e, L, c, &bt->b, &d);

	if (r < 0)
		fail_msg("engine_forward: %s (%s)", d.msg, strerror(-r));
}

/* The engine's result against the reference: routing exact, output within 1e-4. */
static void expect_like_ref(const struct batch *bt, const struct ref_result *ref)
{
	const uint32_t T = bt->b.n_tokens, d = bt->d, k = bt->k;

	for (size_t i = 0; i < (size_t)T * k; i++) {
		if (bt->b.expert_index[i] != ref->idx[i])
			fail_msg("token %zu slot %zu: expert %d, reference %d", i / k, i % k,
				 bt->b.expert_index[i], ref->idx[i]);
		ASSERT_CLOSE(bt->b.expert_weight[i], ref->w[i], 1e-7, 1e-6);
	}
	for (uint32_t e = 0; e < bt->E; e++)
		assert_int_equal(bt->b.tokens_per_expert[e], ref->tpe[e]);
	assert_int_equal(bt->b.n_dropped, ref->n_dropped);
	for (size_t i = 0; i < (size_t)T * d; i++) {
		double got = bt->b.output[i], want = ref->y[i];

		if (!(fabs(got - want) <= 1e-4 + 1e-4 * fabs(want)))
			fail_msg("output token %zu column %zu: %.9g, reference %.9g", i / d, i % d,
				 got, want);
	}
}

/* Build, run on @e, compare with the reference. */
static void run_vs_ref(struct engine *e, const struct layer_spec *sp,
		       const struct router_config *c, uint32_t T)
{
	struct mem_layer *m = mem_layer_new(sp);
	float *x = input_new(T, sp->d, sp->seed + 1000);
	struct ref_result ref;
	struct batch bt;

	batch_init(&bt, x, T, sp->d, c->top_k, sp->E);
	forward_ok(e, &m->L, c, &bt);
	ref_forward(&m->L, c, x, T, &ref);
	expect_like_ref(&bt, &ref);
	ASSERT_CLOSE(bt.b.aux_loss, ref.aux, 1e-9, 1e-6);
	assert_true(bt.b.has_z_loss);
	ref_free(&ref);
	batch_done(&bt);
	free(x);
	mem_layer_free(m);
}

/* -------------------------------------------------------------- tests */

static void test_reference_every_activation(void **state)
{
	static const enum activation acts[] = { ACT_RELU, ACT_GELU, ACT_GELU_TANH, ACT_SILU_GATED,
						ACT_GELU_GATED };

	(void)state;
	for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++) {
		bool gated = acts[i] == ACT_SILU_GATED || acts[i] == ACT_GELU_GATED;
		struct layer_spec sp = { .d = 12, .ff = 20, .E = 5, .gated = gated, .bias = true,
					 .seed = 100 + i };
		struct router_config c = topk_config(2, i % 2 == 0, acts[i]);

		run_vs_ref(engine_1, &sp, &c, 9);
		sp.bias = false;
		run_vs_ref(engine_2, &sp, &c, 9);
	}
}

static void test_reference_scale_modes(void **state)
{
	static const enum scale_mode modes[] = { SCALE_OUTPUT, SCALE_INPUT, SCALE_NONE };

	(void)state;
	for (size_t i = 0; i < 3; i++) {
		struct layer_spec sp = { .d = 10, .ff = 16, .E = 4, .gated = true, .bias = true,
					 .seed = 7 };
		struct router_config c = topk_config(2, true, ACT_SILU_GATED);

		c.scale = modes[i];
		run_vs_ref(engine_1, &sp, &c, 11);
		sp.gated = false;
		c.activation = ACT_RELU;
		run_vs_ref(engine_4, &sp, &c, 11);
	}
}

static void test_one_token(void **state)
{
	struct layer_spec sp = { .d = 16, .ff = 24, .E = 6, .gated = true, .bias = true,
				 .seed = 21 };
	struct router_config c = topk_config(2, true, ACT_SILU_GATED);

	(void)state;
	run_vs_ref(engine_1, &sp, &c, 1);
	run_vs_ref(engine_4, &sp, &c, 1);
	/* a capacity factor cannot round a one-token batch down to nothing */
	c.capacity_factor = 1.0; /* int(1 * 2 * 1 / 6) = 0 -> 1 */
	run_vs_ref(engine_2, &sp, &c, 1);
	c.top_k = 1;
	run_vs_ref(engine_2, &sp, &c, 1);
}

static void test_one_expert(void **state)
{
	struct layer_spec sp = { .d = 8, .ff = 12, .E = 1, .bias = true, .seed = 31 };
	struct router_config c = topk_config(1, false, ACT_RELU);
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(5, 8, 32);
	struct batch bt;

	(void)state;
	batch_init(&bt, x, 5, 8, 1, 1);
	forward_ok(engine_2, &m->L, &c, &bt);
	/* the softmax of a single logit is exactly 1 */
	for (uint32_t t = 0; t < 5; t++) {
		assert_int_equal(bt.b.expert_index[t], 0);
		assert_true(bt.b.expert_weight[t] == 1.0f);
	}
	assert_int_equal(bt.b.tokens_per_expert[0], 5);
	ASSERT_CLOSE(bt.b.aux_loss, 1.0, 1e-12, 0);
	batch_done(&bt);
	free(x);
	mem_layer_free(m);
	run_vs_ref(engine_1, &sp, &c, 5);
}

static void test_k_equals_e(void **state)
{
	struct layer_spec sp = { .d = 8, .ff = 12, .E = 3, .gated = true, .seed = 41 };
	struct router_config c = topk_config(3, false, ACT_SILU_GATED);

	(void)state;
	run_vs_ref(engine_1, &sp, &c, 7);
	c.normalize = true;
	run_vs_ref(engine_4, &sp, &c, 7);
}

static void test_capacity_above_tokens(void **state)
{
	struct layer_spec sp = { .d = 12, .ff = 16, .E = 4, .bias = true, .seed = 51 };
	struct router_config c = topk_config(2, true, ACT_RELU);
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(20, 12, 52);
	struct batch dropless, big;

	(void)state;
	batch_init(&dropless, x, 20, 12, 2, 4);
	batch_init(&big, x, 20, 12, 2, 4);
	forward_ok(engine_2, &m->L, &c, &dropless);
	c.capacity_factor = 100; /* capacity 1000 > T */
	forward_ok(engine_2, &m->L, &c, &big);
	assert_int_equal(big.b.n_dropped, 0);
	/* nothing dropped: the same plan, the same bits */
	assert_memory_equal(big.b.output, dropless.b.output, sizeof(float) * 20 * 12);
	assert_memory_equal(big.b.expert_index, dropless.b.expert_index, sizeof(int32_t) * 40);
	batch_done(&dropless);
	batch_done(&big);
	free(x);
	mem_layer_free(m);
	run_vs_ref(engine_1, &sp, &c, 20);
}

static void test_capacity_tiny(void **state)
{
	enum { T = 16, D = 12, E = 4 };
	struct layer_spec sp = { .d = D, .ff = 16, .E = E, .bias = true, .seed = 61 };
	struct router_config c = topk_config(1, false, ACT_RELU);
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(T, D, 62);
	struct ref_result ref;
	struct batch bt;
	uint32_t fully_dropped = 0;

	(void)state;
	c.capacity_factor = 0.01; /* int(0.01 * 16 / 4) = 0 -> capacity 1 */
	for (int pass = 0; pass < 3; pass++) {
		c.drop = pass == 0 ? DROP_ZERO : DROP_PASSTHROUGH;
		c.scale = pass == 2 ? SCALE_NONE : SCALE_OUTPUT;
		batch_init(&bt, x, T, D, 1, E);
		forward_ok(engine_2, &m->L, &c, &bt);
		ref_forward(&m->L, &c, x, T, &ref);
		expect_like_ref(&bt, &ref);
		/* one token per chosen expert survives */
		assert_true(bt.b.n_dropped >= T - E);
		fully_dropped = 0;
		for (uint32_t t = 0; t < T; t++) {
			const float *y = bt.b.output + t * D, *xt = x + t * D;

			if (bt.b.expert_index[t] >= 0)
				continue;
			fully_dropped++;
			for (uint32_t i = 0; i < D; i++) {
				if (pass == 0) /* exactly zero */
					assert_true(y[i] == 0.0f);
				else if (pass == 1) /* x · top-1 probability */
					ASSERT_CLOSE(y[i], xt[i] * ref.top1[t], 1e-7, 1e-6);
				else /* unscaled: x itself, bit for bit */
					assert_true(y[i] == xt[i]);
			}
		}
		assert_int_equal(fully_dropped, bt.b.n_dropped);
		ref_free(&ref);
		batch_done(&bt);
	}
	free(x);
	mem_layer_free(m);
}

/* Router bias 50 on expert 2 (and 40 on 3): every token goes there. */
static void test_all_tokens_to_one_expert(void **state)
{
	enum { T = 300, D = 16, E = 5 };
	struct layer_spec sp = { .d = D, .ff = 24, .E = E, .bias = true, .gated = true,
				 .seed = 71 };
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(T, D, 72);
	struct router_config c = topk_config(1, false, ACT_SILU_GATED);
	struct ref_result ref;
	struct batch bt;
	float *rb = (float *)(uintptr_t)m->L.router_b;

	(void)state;
	rb[2] = 50.0f;
	rb[3] = 40.0f;
	for (uint32_t k = 1; k <= 2; k++) {
		c.top_k = k;
		batch_init(&bt, x, T, D, k, E);
		forward_ok(engine_4, &m->L, &c, &bt);
		ref_forward(&m->L, &c, x, T, &ref);
		expect_like_ref(&bt, &ref);
		/* experts 0, 1, 4 receive nothing */
		assert_int_equal(bt.b.tokens_per_expert[0], 0);
		assert_int_equal(bt.b.tokens_per_expert[1], 0);
		assert_int_equal(bt.b.tokens_per_expert[2], T);
		assert_int_equal(bt.b.tokens_per_expert[3], k == 2 ? T : 0);
		assert_int_equal(bt.b.tokens_per_expert[4], 0);
		ref_free(&ref);
		batch_done(&bt);
	}
	free(x);
	mem_layer_free(m);
}

/*
 * A batch big enough to be tiled by rows (bins of more than 256 rows) and by
 * columns (d_ff and the shared d_ff above 512), with a shared expert wider
 * than the routed ones (so h has a row stride above a routed expert's d_ff):
 * bitwise the same on 1, 2 and 4 workers, the reference's within 1e-4, and
 * the same within rounding with every matmul kernel.
 */
static void test_workers_and_kernels(void **state)
{
	enum { T = 300, D = 40, E = 4 };
	static const enum matmul_kernel kernels[] = { MATMUL_SGEMV, MATMUL_SMALLM,
						      MATMUL_SGEMM };
	struct layer_spec sp = { .d = D, .ff = 520, .E = E, .gated = true, .bias = true,
				 .shared_ff = 600, .shared_gate = true, .seed = 81 };
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(T, D, 82);
	struct router_config c = topk_config(2, true, ACT_SILU_GATED);
	struct ref_result ref;
	struct batch b1, b2, b4;
	bool big_bin = false;

	(void)state;
	/* expert 0 is in almost every token's top 2: a bin of more than 256 rows */
	((float *)(uintptr_t)m->L.router_b)[0] = 4.0f;
	batch_init(&b1, x, T, D, 2, E);
	batch_init(&b2, x, T, D, 2, E);
	batch_init(&b4, x, T, D, 2, E);
	forward_ok(engine_1, &m->L, &c, &b1);
	forward_ok(engine_2, &m->L, &c, &b2);
	forward_ok(engine_4, &m->L, &c, &b4);
	assert_memory_equal(b1.b.output, b2.b.output, sizeof(float) * T * D);
	assert_memory_equal(b1.b.output, b4.b.output, sizeof(float) * T * D);
	ref_forward(&m->L, &c, x, T, &ref);
	expect_like_ref(&b1, &ref);
	for (uint32_t e = 0; e < E; e++)
		big_bin |= b1.b.tokens_per_expert[e] > 256;
	assert_true(big_bin); /* the row tiling really ran */

	for (size_t i = 0; i < sizeof(kernels) / sizeof(kernels[0]); i++) {
		struct engine_opts o;
		struct engine *ek;
		struct batch bk;

		engine_opts_init(&o);
		o.n_workers = 2;
		o.kernel = kernels[i];
		ASSERT_OK(engine_new(&o, &ek, NULL));
		batch_init(&bk, x, T, D, 2, E);
		forward_ok(ek, &m->L, &c, &bk);
		expect_like_ref(&bk, &ref);
		batch_done(&bk);
		engine_free(ek);
	}
	ref_free(&ref);
	batch_done(&b1);
	batch_done(&b2);
	batch_done(&b4);
	free(x);
	mem_layer_free(m);
}

static void test_shared_expert(void **state)
{
	struct layer_spec sp = { .d = 12, .ff = 16, .E = 4, .gated = true, .shared_ff = 28,
				 .shared_gate = true, .seed = 91 };
	struct router_config c = topk_config(2, false, ACT_SILU_GATED);

	(void)state;
	/* Qwen2-MoE: σ(x·g)·S(x) */
	run_vs_ref(engine_1, &sp, &c, 13);
	run_vs_ref(engine_4, &sp, &c, 13);
	/* DeepSeek: weight 1 */
	sp.shared_gate = false;
	run_vs_ref(engine_2, &sp, &c, 13);
	/* with drops: a fully dropped token still gets the shared expert */
	c.capacity_factor = 0.01;
	c.drop = DROP_PASSTHROUGH;
	run_vs_ref(engine_2, &sp, &c, 13);
	c.drop = DROP_ZERO;
	sp.shared_gate = true;
	run_vs_ref(engine_1, &sp, &c, 13);
}

/* The shared expert's contribution, isolated: (layer with it) - (layer without). */
static void test_shared_expert_contribution(void **state)
{
	enum { T = 6, D = 8 };
	struct layer_spec sp = { .d = D, .ff = 8, .E = 2, .shared_ff = 10, .shared_gate = true,
				 .seed = 95 };
	struct router_config c = topk_config(1, false, ACT_RELU);
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(T, D, 96);
	struct batch with, without;
	double *sy = malloc(sizeof(double) * D), xt[D];

	(void)state;
	assert_non_null(sy);
	batch_init(&with, x, T, D, 1, 2);
	batch_init(&without, x, T, D, 1, 2);
	forward_ok(engine_2, &m->L, &c, &with);
	m->L.has_shared = false;
	forward_ok(engine_2, &m->L, &c, &without);
	m->L.has_shared = true;
	for (uint32_t t = 0; t < T; t++) {
		double a = 0, g;

		for (uint32_t i = 0; i < D; i++) {
			xt[i] = x[t * D + i];
			a += xt[i] * m->L.shared_gate[i];
		}
		g = 1 / (1 + exp(-a));
		ffn_ref(&m->L.shared, ACT_RELU, D, xt, sy);
		for (uint32_t i = 0; i < D; i++)
			ASSERT_CLOSE(with.b.output[t * D + i] - without.b.output[t * D + i],
				     g * sy[i], 1e-5, 1e-4);
	}
	free(sy);
	batch_done(&with);
	batch_done(&without);
	free(x);
	mem_layer_free(m);
}

static void test_client_given_routing(void **state)
{
	enum { T = 3, D = 8, K = 2 };
	struct layer_spec sp = { .d = D, .ff = 8, .E = 3, .bias = true, .seed = 97 };
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(T, D, 98);
	static const int32_t ge[T * K] = { 2, 0, -1, -1, 1, 1 };
	static const float gw[T * K] = { 0.25f, 0.5f, 9.0f, 9.0f, 1.0f, 2.0f };
	const struct route_given given = { ge, gw };
	struct router_config c;
	struct batch bt;
	double ey[D], xt[D];

	(void)state;
	router_config_init(&c);
	c.kind = ROUTER_GIVEN;
	c.top_k = K;
	batch_init(&bt, x, T, D, K, 3);
	bt.b.given = &given;
	forward_ok(engine_2, &m->L, &c, &bt);
	assert_memory_equal(bt.b.expert_index, ge, sizeof(ge));
	for (uint32_t t = 0; t < T; t++) {
		double want[D] = { 0 };

		for (uint32_t i = 0; i < D; i++)
			xt[i] = x[t * D + i];
		for (uint32_t j = 0; j < K; j++) {
			if (ge[t * K + j] < 0)
				continue;
			ffn_ref(&m->L.experts[ge[t * K + j]].ffn, ACT_RELU, D, xt, ey);
			for (uint32_t i = 0; i < D; i++)
				want[i] += gw[t * K + j] * ey[i];
		}
		for (uint32_t i = 0; i < D; i++)
			ASSERT_CLOSE(bt.b.output[t * D + i], want[i], 1e-4, 1e-4);
	}
	/* no given routing: refused */
	bt.b.given = NULL;
	ASSERT_ERRNO(engine_forward(engine_2, &m->L, &c, &bt.b, NULL), EINVAL);
	batch_done(&bt);
	free(x);
	mem_layer_free(m);
}

static void test_nonfinite_input_fails(void **state)
{
	enum { T = 8, D = 12 };
	struct layer_spec sp = { .d = D, .ff = 16, .E = 4, .bias = true, .seed = 101 };
	struct router_config c = topk_config(2, true, ACT_RELU);
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(T, D, 102), *bad = malloc(sizeof(float) * T * D);
	struct batch good, bt;
	struct diag d = { { 0 } };

	(void)state;
	assert_non_null(bad);
	batch_init(&good, x, T, D, 2, 4);
	forward_ok(engine_2, &m->L, &c, &good);

	memcpy(bad, x, sizeof(float) * T * D);
	bad[5 * D + 3] = NAN;
	batch_init(&bt, bad, T, D, 2, 4);
	ASSERT_ERRNO(engine_forward(engine_2, &m->L, &c, &bt.b, &d), EDOM);
	assert_non_null(strstr(d.msg, "non-finite"));
	assert_non_null(strstr(d.msg, "token 5"));
	bad[5 * D + 3] = -INFINITY;
	diag_clear(&d);
	ASSERT_ERRNO(engine_forward(engine_2, &m->L, &c, &bt.b, &d), EDOM);

	/* the engine is healthy: the next batch gives the same bits as before */
	bt.b.x = x;
	forward_ok(engine_2, &m->L, &c, &bt);
	assert_memory_equal(bt.b.output, good.b.output, sizeof(float) * T * D);
	batch_done(&bt);
	batch_done(&good);
	free(bad);
	free(x);
	mem_layer_free(m);
}

static void test_nonfinite_sanitize(void **state)
{
	enum { T = 8, D = 12 };
	struct layer_spec sp = { .d = D, .ff = 16, .E = 4, .bias = true, .seed = 111 };
	struct router_config c = topk_config(2, true, ACT_RELU);
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(T, D, 112), *bad = malloc(sizeof(float) * T * D);
	struct batch zeroed, bt;

	(void)state;
	assert_non_null(bad);
	memcpy(bad, x, sizeof(float) * T * D);
	bad[0] = NAN;
	bad[3 * D + 7] = NAN;
	bad[T * D - 1] = -NAN;
	/* NaN -> 0: the same as a batch with zeros there */
	x[0] = 0;
	x[3 * D + 7] = 0;
	x[T * D - 1] = 0;
	batch_init(&zeroed, x, T, D, 2, 4);
	forward_ok(engine_2, &m->L, &c, &zeroed);
	assert_int_equal(zeroed.b.n_sanitized, 0);

	c.nonfinite = NONFINITE_SANITIZE;
	batch_init(&bt, bad, T, D, 2, 4);
	forward_ok(engine_2, &m->L, &c, &bt);
	assert_int_equal(bt.b.n_sanitized, 3);
	assert_memory_equal(bt.b.output, zeroed.b.output, sizeof(float) * T * D);
	/* the caller's input is not modified */
	assert_true(isnan(bad[0]) && isnan(bad[3 * D + 7]));

	/* ... and per segment: tokens 0-1, 2, 3-7 hold 1, 0, 2 non-finite values */
	{
		const uint32_t rows[3] = { 2, 1, 5 };
		struct engine_segment_stats seg[3];

		bt.b.segment_rows = rows;
		bt.b.n_segments = 3;
		bt.b.segment_stats = seg;
		forward_ok(engine_2, &m->L, &c, &bt);
		assert_int_equal(bt.b.n_sanitized, 3);
		assert_int_equal(seg[0].n_sanitized, 1);
		assert_int_equal(seg[1].n_sanitized, 0);
		assert_int_equal(seg[2].n_sanitized, 2);
		bt.b.n_segments = 0;
	}

	/* the count is per batch */
	bt.b.x = x;
	forward_ok(engine_2, &m->L, &c, &bt);
	assert_int_equal(bt.b.n_sanitized, 0);
	batch_done(&bt);
	batch_done(&zeroed);
	free(bad);
	free(x);
	mem_layer_free(m);
}

/*
 * A finite activation above 2^64 fails the batch with -ERANGE before routing
 * (the message names token and column and is the input check's, not the
 * output check's), both through engine_forward() and engine_check_input(),
 * which must agree. 2^64 itself passes. Under nonfinite=fail a non-finite
 * value is reported first (-EDOM); under nonfinite=sanitize an infinity,
 * which becomes ±FLT_MAX, is not refused by the bound, but a finite 1e30 is.
 */
static void test_input_magnitude_bound(void **state)
{
	enum { T = 8, D = 12 };
	struct layer_spec sp = { .d = D, .ff = 16, .E = 4, .bias = true, .seed = 141 };
	struct router_config c = topk_config(2, true, ACT_RELU);
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(T, D, 142), *in = malloc(sizeof(float) * T * D);
	const float above = nextafterf(ENGINE_INPUT_MAX_ABS, INFINITY);
	struct batch bt;
	struct diag d = { { 0 } };

	(void)state;
	assert_non_null(in);
	memcpy(in, x, sizeof(float) * T * D);
	batch_init(&bt, in, T, D, 2, 4);

	/* exactly 2^64 is an activation like any other */
	in[3 * D + 5] = -ENGINE_INPUT_MAX_ABS;
	ASSERT_OK(engine_check_input(&c, in, T, D, &d));
	in[3 * D + 5] = above;
	ASSERT_ERRNO(engine_check_input(&c, in, T, D, &d), ERANGE);
	assert_non_null(strstr(d.msg, "token 3, column 5"));
	diag_clear(&d);
	ASSERT_ERRNO(engine_forward(engine_2, &m->L, &c, &bt.b, &d), ERANGE);
	assert_non_null(strstr(d.msg, "token 3, column 5"));
	assert_non_null(strstr(d.msg, "exceeds 2^64"));
	in[3 * D + 5] = -FLT_MAX;
	diag_clear(&d);
	ASSERT_ERRNO(engine_forward(engine_2, &m->L, &c, &bt.b, &d), ERANGE);
	assert_non_null(strstr(d.msg, "token 3, column 5"));

	/* nonfinite=fail: a NaN later in the batch is still -EDOM, as before */
	in[6 * D] = NAN;
	diag_clear(&d);
	ASSERT_ERRNO(engine_check_input(&c, in, T, D, &d), EDOM);
	diag_clear(&d);
	ASSERT_ERRNO(engine_forward(engine_2, &m->L, &c, &bt.b, &d), EDOM);

	/* nonfinite=sanitize: only the finite value is refused */
	c.nonfinite = NONFINITE_SANITIZE;
	diag_clear(&d);
	ASSERT_ERRNO(engine_check_input(&c, in, T, D, &d), ERANGE);
	diag_clear(&d);
	ASSERT_ERRNO(engine_forward(engine_2, &m->L, &c, &bt.b, &d), ERANGE);
	assert_non_null(strstr(d.msg, "token 3, column 5"));
	in[3 * D + 5] = x[3 * D + 5];
	in[6 * D] = INFINITY; /* sanitised to FLT_MAX, which the bound must not refuse */
	ASSERT_OK(engine_check_input(&c, in, T, D, NULL));
	in[6 * D] = NAN;
	ASSERT_OK(engine_check_input(&c, in, T, D, NULL));
	forward_ok(engine_2, &m->L, &c, &bt);
	assert_int_equal(bt.b.n_sanitized, 1);

	/* and a clean batch passes both */
	c.nonfinite = NONFINITE_FAIL;
	ASSERT_OK(engine_check_input(&c, x, T, D, NULL));
	batch_done(&bt);
	free(in);
	free(x);
	mem_layer_free(m);
}

static void test_overflowing_weights(void **state)
{
	enum { T = 4, D = 8, FF = 8, E = 2 };
	struct layer_spec sp = { .d = D, .ff = FF, .E = E, .seed = 121 };
	struct router_config c = topk_config(1, false, ACT_RELU);
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(T, D, 122);
	struct batch bt, ok;
	struct diag d = { { 0 } };

	(void)state;
	batch_init(&ok, x, T, D, 1, E);
	forward_ok(engine_4, &m->L, &c, &ok);
	for (uint32_t e = 0; e < E; e++) {
		float *w1 = (float *)(uintptr_t)m->ex[e].ffn.w1;
		float *w2 = (float *)(uintptr_t)m->ex[e].ffn.w2;

		for (uint32_t i = 0; i < FF * D; i++) {
			w1[i] *= 1e30f;
			w2[i] *= 1e30f;
		}
	}
	batch_init(&bt, x, T, D, 1, E);
	ASSERT_ERRNO(engine_forward(engine_4, &m->L, &c, &bt.b, &d), ERANGE);
	assert_non_null(strstr(d.msg, "not finite"));
	/* the weights back to normal: the engine gives the earlier answer */
	for (uint32_t e = 0; e < E; e++) {
		float *w1 = (float *)(uintptr_t)m->ex[e].ffn.w1;
		float *w2 = (float *)(uintptr_t)m->ex[e].ffn.w2;

		for (uint32_t i = 0; i < FF * D; i++) {
			w1[i] /= 1e30f;
			w2[i] /= 1e30f;
		}
	}
	forward_ok(engine_4, &m->L, &c, &bt);
	for (uint32_t i = 0; i < T * D; i++)
		ASSERT_CLOSE(bt.b.output[i], ok.b.output[i], 1e-6, 1e-5);
	batch_done(&bt);
	batch_done(&ok);
	free(x);
	mem_layer_free(m);
}

static void test_bad_arguments(void **state)
{
	enum { T = 2, D = 8 };
	struct layer_spec sp = { .d = D, .ff = 8, .E = 3, .seed = 131 };
	struct router_config c = topk_config(2, false, ACT_RELU);
	struct mem_layer *m = mem_layer_new(&sp);
	float *x = input_new(T, D, 132);
	struct batch bt;
	struct diag d = { { 0 } };
	float *out;

	(void)state;
	batch_init(&bt, x, T, D, 2, 3);
	bt.b.n_tokens = 0;
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &bt.b, &d), EINVAL);
	assert_non_null(strstr(d.msg, "tokens"));
	bt.b.n_tokens = ENGINE_MAX_TOKENS + 1;
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &bt.b, NULL), EINVAL);
	bt.b.n_tokens = T;
	ASSERT_ERRNO(engine_forward(engine_1, NULL, &c, &bt.b, NULL), EINVAL);
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, NULL, NULL), EINVAL);
	bt.b.x = NULL;
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &bt.b, NULL), EINVAL);
	bt.b.x = x;
	out = bt.b.output;
	bt.b.output = NULL;
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &bt.b, NULL), EINVAL);
	bt.b.output = out;
	/* settings the layer cannot serve */
	c.top_k = 4;
	diag_clear(&d);
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &bt.b, &d), EINVAL);
	assert_non_null(strstr(d.msg, "top_k"));
	/* cfg NULL: the layer's own settings (top-1 relu by default) */
	forward_ok(engine_1, &m->L, NULL, &bt);
	/* the optional outputs may be NULL */
	c.top_k = 2;
	free(bt.b.expert_index);
	free(bt.b.expert_weight);
	free(bt.b.tokens_per_expert);
	bt.b.expert_index = NULL;
	bt.b.expert_weight = NULL;
	bt.b.tokens_per_expert = NULL;
	forward_ok(engine_1, &m->L, &c, &bt);
	batch_done(&bt);
	free(x);
	mem_layer_free(m);
}

/*
 * Settings a layer cannot serve, and overflow hidden by an activation: each
 * of these once crashed or passed silently.
 */

/*
 * A caller's activation=silu_gated on a layer without w3 must be refused
 * (-EINVAL), not reach expert_ffn_up() with f->w3 == NULL.
 */
static void test_cfg_gated_without_w3_refused(void **state)
{
	struct layer_spec sp = { .d = 8, .ff = 8, .E = 2, .gated = false, .seed = 141 };
	struct router_config c = topk_config(1, false, ACT_SILU_GATED);
	struct mem_layer *m;
	float *x;
	struct batch bt;

	(void)state;
	m = mem_layer_new(&sp);
	x = input_new(1, 8, 142);
	batch_init(&bt, x, 1, 8, 1, 2);
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &bt.b, NULL), EINVAL);
	batch_done(&bt);
	free(x);
	mem_layer_free(m);
}

/*
 * A caller's base_sublayers beyond what the layer loaded must be refused
 * (-EINVAL), not read past the sublayers array.
 */
static void test_cfg_base_sublayers_beyond_layer_refused(void **state)
{
	enum { D = 4, FF = 4, E = 2 };
	float cent[E * D], ones[D], zeros[FF * D], x[D] = { 1, 2, 3, 4 }, y[D];
	struct base_sublayer *sub[E];
	struct moe_expert ex[E];
	struct moe_layer L = { .d_model = D, .d_ff = FF, .n_experts = E, .centroids = cent,
			       .experts = ex };
	struct router_config c;
	struct engine_batch b = { .x = x, .n_tokens = 1, .output = y };

	(void)state;
	for (uint32_t i = 0; i < E * D; i++)
		cent[i] = (float)i / 8;
	for (uint32_t i = 0; i < D; i++)
		ones[i] = 1;
	memset(zeros, 0, sizeof(zeros));
	for (uint32_t e = 0; e < E; e++) {
		sub[e] = calloc(1, sizeof(*sub[e])); /* the model loaded one sublayer */
		assert_non_null(sub[e]);
		*sub[e] = (struct base_sublayer){ ones, zeros, zeros, zeros, zeros, zeros };
		ex[e] = (struct moe_expert){ .sublayers = sub[e] };
	}
	router_config_init(&L.router);
	L.router.kind = ROUTER_BASE;
	L.router.base_sublayers = 1;
	c = L.router;
	ASSERT_OK(engine_forward(engine_1, &L, &c, &b, NULL)); /* the layer's own: fine */
	c.base_sublayers = 3;
	ASSERT_ERRNO(engine_forward(engine_1, &L, &c, &b, NULL), EINVAL);
	for (uint32_t e = 0; e < E; e++)
		free(sub[e]);
}

/*
 * ReLU must keep NaN (as torch.relu does): an overflow inside an expert
 * (x·W1 summing +inf and -inf) then reaches the output check and fails the
 * batch with -ERANGE instead of vanishing into a finite, wrong output. So
 * must GELU (erf of NaN is NaN). Input x = (1e19, 1e19) (below the 2^64
 * input bound), W1 = [[1e20, -1e20]]; ReLU set explicitly, then GELU, then
 * the layer's own config (NULL), whose default activation is ReLU.
 */
static void test_relu_keeps_overflow_visible(void **state)
{
	float rw[2] = { 0.5f, 0.5f }, w1[2] = { 1e20f, -1e20f }, w2[2] = { 1, 1 };
	float x[2] = { 1e19f, 1e19f }, y[2];
	struct moe_expert ex[1] = { { .ffn = { .w1 = w1, .w2 = w2, .d_ff = 1 } } };
	struct moe_layer L = { .d_model = 2, .d_ff = 1, .n_experts = 1, .router_w = rw,
			       .experts = ex };
	struct engine_batch b = { .x = x, .n_tokens = 1, .output = y };
	struct router_config c;

	(void)state;
	router_config_init(&L.router);
	ASSERT_EQ(L.router.activation, ACT_RELU);
	c = L.router;
	c.activation = ACT_RELU;
	ASSERT_ERRNO(engine_forward(engine_1, &L, &c, &b, NULL), ERANGE);
	c.activation = ACT_GELU;
	ASSERT_ERRNO(engine_forward(engine_1, &L, &c, &b, NULL), ERANGE);
	ASSERT_ERRNO(engine_forward(engine_1, &L, NULL, &b, NULL), ERANGE);
}

/*
 * A caller's hierarchical shape must be the layer's: groups=4 x 2 on a
 * layer built as 2 x 4 would read past its outer gate (X rows of [X][d]).
 */
static void test_cfg_hierarchical_shape_refused(void **state)
{
	enum { D = 2, X = 2, Y = 4, E = X * Y };
	float outer[X * D] = { 1, 0, 0, 1 }, inner[X * Y * D], w1[D], w2[D];
	float x[D] = { 0.5f, -0.25f }, y[D];
	struct moe_expert ex[E];
	struct moe_layer L = { .d_model = D, .d_ff = 1, .n_experts = E, .outer_w = outer,
			       .inner_w = inner, .experts = ex };
	struct engine_batch b = { .x = x, .n_tokens = 1, .output = y };
	struct router_config c;

	(void)state;
	for (int i = 0; i < X * Y * D; i++)
		inner[i] = (float)(i % 5) / 4;
	for (int i = 0; i < D; i++)
		w1[i] = w2[i] = 0.5f;
	for (int e = 0; e < E; e++)
		ex[e] = (struct moe_expert){ .ffn = { .w1 = w1, .w2 = w2, .d_ff = 1 } };
	router_config_init(&L.router);
	L.router.kind = ROUTER_HIERARCHICAL;
	L.router.top_k = 4;
	L.router.groups = X;
	L.router.experts_per_group = Y;
	ASSERT_OK(engine_forward(engine_1, &L, NULL, &b, NULL));
	c = L.router;
	c.groups = 4;
	c.experts_per_group = 2;
	ASSERT_ERRNO(engine_forward(engine_1, &L, &c, &b, NULL), EINVAL);
}

/* ------------------------------------------------------------- segments */

/*
 * Merged runs: three batches of different sizes and inputs, each alone, then
 * as one batch with a segment per batch. Each segment's statistics must be
 * bitwise its batch's alone (memcmp on the doubles), for every router that
 * may be merged; the merged batch's own statistics must differ from a
 * segment's, or the test could not tell a segment from the whole.
 */
enum { SEG_N = 3, SEG_D = 16, SEG_X = 2, SEG_Y = 4, SEG_E = SEG_X * SEG_Y };
static const uint32_t seg_rows[SEG_N] = { 5, 1, 7 };

static struct mem_layer *segment_layer(void)
{
	struct layer_spec sp = { .d = SEG_D, .ff = 8, .E = SEG_E, .bias = true, .seed = 91 };
	struct mem_layer *m = mem_layer_new(&sp);
	uint64_t seed = 17;

	m->L.outer_w = mem_randn(m, (size_t)SEG_X * SEG_D, 1, &seed);
	m->L.inner_w = mem_randn(m, (size_t)SEG_X * SEG_Y * SEG_D, 1, &seed);
	m->L.router.groups = SEG_X;
	m->L.router.experts_per_group = SEG_Y;
	return m;
}

static void expect_stats_bitwise(const char *what, uint32_t seg,
				 const struct engine_segment_stats *got,
				 const struct engine_batch *alone)
{
	if (got->n_dropped != alone->n_dropped || got->n_sanitized != alone->n_sanitized ||
	    got->has_z_loss != alone->has_z_loss ||
	    memcmp(&got->aux_loss, &alone->aux_loss, sizeof(double)) ||
	    (alone->has_z_loss && memcmp(&got->z_loss, &alone->z_loss, sizeof(double))))
		fail_msg("%s, segment %u: dropped %u aux %a z %a (%d), alone dropped %u aux %a "
			 "z %a (%d)",
			 what, seg, got->n_dropped, got->aux_loss, got->z_loss, got->has_z_loss,
			 alone->n_dropped, alone->aux_loss, alone->z_loss, alone->has_z_loss);
}

/* Run the three batches alone and merged with @c; compare. */
static void segments_vs_alone(const char *what, const struct moe_layer *L,
			      const struct router_config *c)
{
	uint32_t T = 0, k = router_config_slots(c);
	struct batch alone[SEG_N], merged;
	struct engine_segment_stats seg[SEG_N];
	float *x[SEG_N], *all;
	bool whole_differs = false;

	for (uint32_t i = 0; i < SEG_N; i++)
		T += seg_rows[i];
	all = malloc(sizeof(float) * T * SEG_D);
	assert_non_null(all);
	for (uint32_t i = 0, t0 = 0; i < SEG_N; t0 += seg_rows[i], i++) {
		x[i] = input_new(seg_rows[i], SEG_D, 1000 + i);
		memcpy(all + (size_t)t0 * SEG_D, x[i], sizeof(float) * seg_rows[i] * SEG_D);
		batch_init(&alone[i], x[i], seg_rows[i], SEG_D, k, SEG_E);
		forward_ok(engine_1, L, c, &alone[i]);
	}
	batch_init(&merged, all, T, SEG_D, k, SEG_E);
	/* NaN garbage: a segment the engine skips cannot match */
	memset(seg, 0xff, sizeof(seg));
	merged.b.segment_rows = seg_rows;
	merged.b.n_segments = SEG_N;
	merged.b.segment_stats = seg;
	forward_ok(engine_2, L, c, &merged);
	for (uint32_t i = 0; i < SEG_N; i++) {
		expect_stats_bitwise(what, i, &seg[i], &alone[i].b);
		whole_differs |= merged.b.aux_loss != alone[i].b.aux_loss ||
				 (merged.b.has_z_loss && merged.b.z_loss != alone[i].b.z_loss);
	}
	if (!whole_differs)
		fail_msg("%s: the merged batch's statistics equal a segment's; the test proves "
			 "nothing",
			 what);
	for (uint32_t i = 0; i < SEG_N; i++) {
		batch_done(&alone[i]);
		free(x[i]);
	}
	batch_done(&merged);
	free(all);
}

static void test_segments_every_mergeable_router(void **state)
{
	struct mem_layer *m = segment_layer();
	float bias[SEG_E];
	struct router_config c;

	(void)state;
	for (uint32_t k = 1; k <= 3; k++) {
		for (int sigmoid = 0; sigmoid < 2; sigmoid++) {
			for (int norm = 0; norm < 2; norm++) {
				char what[64];

				c = topk_config(k, norm, ACT_RELU);
				c.score = sigmoid ? SCORE_SIGMOID : SCORE_SOFTMAX;
				if (sigmoid)
					c.scale = SCALE_NONE;
				snprintf(what, sizeof(what), "topk k=%u %s%s", k,
					 sigmoid ? "sigmoid" : "softmax", norm ? " normalized" : "");
				segments_vs_alone(what, &m->L, &c);
			}
		}
	}
	/* DeepSeek-V3: sigmoid, groups, a selection bias, a routed scaling factor */
	for (uint32_t e = 0; e < SEG_E; e++)
		bias[e] = (float)e * 0.01f;
	m->L.selection_bias = bias;
	c = topk_config(2, true, ACT_RELU);
	c.score = SCORE_SIGMOID;
	c.scale = SCALE_NONE;
	c.expert_groups = 4;
	c.topk_groups = 2;
	c.routed_scaling = 2.5;
	segments_vs_alone("topk deepseek", &m->L, &c);
	m->L.selection_bias = NULL;

	c = topk_config(1, false, ACT_RELU);
	c.kind = ROUTER_SWITCH;
	segments_vs_alone("switch dropless", &m->L, &c);

	c.kind = ROUTER_GSHARD;
	c.top_k = 2;
	c.top2_variant = TOP2_MESHTF;
	c.second_policy = SECOND_ALL;
	segments_vs_alone("gshard meshtf all", &m->L, &c);
	c.second_policy = SECOND_NONE;
	segments_vs_alone("gshard meshtf none", &m->L, &c);
	c.second_policy = SECOND_THRESHOLD;
	c.second_threshold = 0.2;
	segments_vs_alone("gshard meshtf threshold", &m->L, &c);
	c.top2_variant = TOP2_FAIRSCALE;
	c.second_policy = SECOND_ALL;
	segments_vs_alone("gshard fairscale", &m->L, &c);

	c = m->L.router;
	c.kind = ROUTER_HIERARCHICAL;
	c.top_k = 4;
	segments_vs_alone("hierarchical 2x4", &m->L, &c);
	mem_layer_free(m);
}

/* One segment is the whole batch: its statistics are the batch's, bitwise. */
static void test_segment_of_whole_batch(void **state)
{
	struct mem_layer *m = segment_layer();
	struct router_config c = topk_config(2, true, ACT_RELU);
	float *x = input_new(9, SEG_D, 5);
	uint32_t rows = 9;
	struct engine_segment_stats st;
	struct batch bt;

	(void)state;
	batch_init(&bt, x, 9, SEG_D, 2, SEG_E);
	bt.b.segment_rows = &rows;
	bt.b.n_segments = 1;
	bt.b.segment_stats = &st;
	forward_ok(engine_1, &m->L, &c, &bt);
	expect_stats_bitwise("whole", 0, &st, &bt.b);
	batch_done(&bt);
	free(x);
	mem_layer_free(m);
}

static void test_segments_refused(void **state)
{
	struct mem_layer *m = segment_layer();
	struct router_config c = topk_config(2, true, ACT_RELU);
	float *x = input_new(6, SEG_D, 5), y[6 * SEG_D];
	struct engine_segment_stats st[3];
	uint32_t rows[3] = { 2, 4, 0 };
	struct engine_batch b = { .x = x, .n_tokens = 6, .output = y, .segment_rows = rows,
				  .n_segments = 2, .segment_stats = st };
	struct diag d = { { 0 } };

	(void)state;
	ASSERT_OK(engine_forward(engine_1, &m->L, &c, &b, &d));
	/* capacity makes a token's slot depend on the tokens before it */
	c.capacity_factor = 1.0;
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &b, &d), EINVAL);
	assert_non_null(strstr(d.msg, "per token"));
	c.capacity_factor = 0;
	c.kind = ROUTER_GSHARD;
	c.second_policy = SECOND_RANDOM;
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &b, &d), EINVAL);
	c = topk_config(2, true, ACT_RELU);
	rows[1] = 3; /* 5 of 6 tokens */
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &b, &d), EINVAL);
	rows[1] = 4;
	b.n_segments = 3; /* an empty segment */
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &b, &d), EINVAL);
	b.n_segments = 2;
	b.segment_stats = NULL;
	ASSERT_ERRNO(engine_forward(engine_1, &m->L, &c, &b, &d), EINVAL);
	b.segment_stats = st;
	ASSERT_OK(engine_forward(engine_1, &m->L, &c, &b, &d));
	free(x);
	mem_layer_free(m);
}

static int group_setup(void **state)
{
	struct engine_opts o;

	(void)state;
	engine_opts_init(&o);
	o.n_workers = 1;
	if (engine_new(&o, &engine_1, NULL) < 0)
		return -1;
	o.n_workers = 2;
	if (engine_new(&o, &engine_2, NULL) < 0)
		return -1;
	o.n_workers = 4;
	if (engine_new(&o, &engine_4, NULL) < 0)
		return -1;
	assert_int_equal(engine_n_workers(engine_4), 4);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	engine_1 = engine_free(engine_1);
	engine_2 = engine_free(engine_2);
	engine_4 = engine_free(engine_4);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reference_every_activation),
		cmocka_unit_test(test_reference_scale_modes),
		cmocka_unit_test(test_one_token),
		cmocka_unit_test(test_one_expert),
		cmocka_unit_test(test_k_equals_e),
		cmocka_unit_test(test_capacity_above_tokens),
		cmocka_unit_test(test_capacity_tiny),
		cmocka_unit_test(test_all_tokens_to_one_expert),
		cmocka_unit_test(test_workers_and_kernels),
		cmocka_unit_test(test_shared_expert),
		cmocka_unit_test(test_shared_expert_contribution),
		cmocka_unit_test(test_client_given_routing),
		cmocka_unit_test(test_nonfinite_input_fails),
		cmocka_unit_test(test_nonfinite_sanitize),
		cmocka_unit_test(test_input_magnitude_bound),
		cmocka_unit_test(test_overflowing_weights),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_cfg_gated_without_w3_refused),
		cmocka_unit_test(test_cfg_base_sublayers_beyond_layer_refused),
		cmocka_unit_test(test_relu_keeps_overflow_visible),
		cmocka_unit_test(test_cfg_hierarchical_shape_refused),
		cmocka_unit_test(test_segments_every_mergeable_router),
		cmocka_unit_test(test_segment_of_whole_batch),
		cmocka_unit_test(test_segments_refused),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
