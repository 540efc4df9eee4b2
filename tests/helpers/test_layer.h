/* SPDX-License-Identifier: MIT */
/*
 * test_layer: small MoE layers built in memory for the engine's tests
 * (seeded normal weights scaled by 1/sqrt(fan-in), optional biases, gated
 * FFNs and a shared expert), each owning its arrays, and normal inputs.
 */
#pragma once

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "test_assert.h"

#include "model/model.h"
#include "router/router.h"
#include "util/rng.h"

#define MAX_E 16
#define MAX_OWNED (16 + 8 * MAX_E)

static inline double rng_normal(uint64_t *state)
{
	double u = 1.0 - (double)(rng_splitmix64(state) >> 11) * 0x1p-53;
	double v = (double)(rng_splitmix64(state) >> 11) * 0x1p-53;

	return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

struct layer_spec {
	uint32_t d, ff, E;
	bool gated;       /* w3 for every FFN */
	bool bias;        /* b1, b2 for the routed experts, and a router bias */
	uint32_t shared_ff; /* 0: no shared expert */
	bool shared_gate;
	uint64_t seed;
};

/* A layer whose every array this struct owns. */
struct mem_layer {
	struct moe_layer L;
	struct moe_expert ex[MAX_E];
	float *owned[MAX_OWNED];
	unsigned n_owned;
};

/* n normal values times @scale, owned by @m. */
static inline float *mem_randn(struct mem_layer *m, size_t n, double scale, uint64_t *seed)
{
	float *p = malloc(sizeof(float) * (n ? n : 1));

	assert_non_null(p);
	assert_true(m->n_owned < MAX_OWNED);
	m->owned[m->n_owned++] = p;
	for (size_t i = 0; i < n; i++)
		p[i] = (float)(rng_normal(seed) * scale);
	return p;
}

static inline void ffn_new(struct mem_layer *m, struct ffn_weights *f, uint32_t d, uint32_t ff,
		    bool gated, bool bias, uint64_t *seed)
{
	f->d_ff = ff;
	f->w1 = mem_randn(m, (size_t)ff * d, 1 / sqrt(d), seed);
	f->w2 = mem_randn(m, (size_t)d * ff, 1 / sqrt(ff), seed);
	f->w3 = gated ? mem_randn(m, (size_t)ff * d, 1 / sqrt(d), seed) : NULL;
	f->b1 = bias ? mem_randn(m, ff, 0.1, seed) : NULL;
	f->b2 = bias ? mem_randn(m, d, 0.1, seed) : NULL;
}

static inline struct mem_layer *mem_layer_new(const struct layer_spec *sp)
{
	struct mem_layer *m = calloc(1, sizeof(*m));
	uint64_t seed = sp->seed;

	assert_non_null(m);
	assert_true(sp->E <= MAX_E);
	m->L.d_model = sp->d;
	m->L.d_ff = sp->ff;
	m->L.n_experts = sp->E;
	router_config_init(&m->L.router);
	m->L.router_w = mem_randn(m, (size_t)sp->E * sp->d, 1 / sqrt(sp->d), &seed);
	m->L.router_b = sp->bias ? mem_randn(m, sp->E, 0.1, &seed) : NULL;
	m->L.experts = m->ex;
	for (uint32_t e = 0; e < sp->E; e++)
		ffn_new(m, &m->ex[e].ffn, sp->d, sp->ff, sp->gated, sp->bias, &seed);
	if (sp->shared_ff) {
		m->L.has_shared = true;
		ffn_new(m, &m->L.shared, sp->d, sp->shared_ff, sp->gated, false, &seed);
		m->L.shared_gate = sp->shared_gate ? mem_randn(m, sp->d, 1 / sqrt(sp->d), &seed)
						   : NULL;
	}
	return m;
}

static inline void mem_layer_free(struct mem_layer *m)
{
	for (unsigned i = 0; i < m->n_owned; i++)
		free(m->owned[i]);
	free(m);
}

/* Mixtral's routing: top-@k renormalised, SiLU-gated experts. */
static inline struct router_config topk_silu_config(uint32_t k)
{
	struct router_config c;

	router_config_init(&c);
	c.kind = ROUTER_TOPK;
	c.top_k = k;
	c.normalize = true;
	c.activation = ACT_SILU_GATED;
	return c;
}

static inline float *input_new(uint32_t T, uint32_t d, uint64_t seed)
{
	float *x = malloc(sizeof(float) * T * d);

	assert_non_null(x);
	for (size_t i = 0; i < (size_t)T * d; i++)
		x[i] = (float)rng_normal(&seed);
	return x;
}
