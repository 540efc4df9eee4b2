/* SPDX-License-Identifier: MIT */
/*
 * Tests of the engine with remote experts (engine_batch.remote), on an
 * in-process stand-in for the peers: dispatch() copies each remote expert's
 * rows away and computes them with engine_experts_scratch() on a second
 * engine (another "host"), collect() copies the results back. The output is
 * bitwise the one of the engine with every expert local, whichever experts
 * are remote (rows > 64 so experts have several row tiles); a failed remote
 * expert loses its slots as capacity drops do (routing -1, weight 0, counted
 * per batch and per segment, other tokens' outputs unchanged; a token that
 * lost every slot gets the passthrough with drop=passthrough); an error from
 * collect() or dispatch() fails the batch, and collect() is always called
 * after a dispatch() that succeeded.
 */
#include "test_assert.h"
#include "test_layer.h"

#include <errno.h>
#include <string.h>

#include "engine/engine.h"

#define DM 48
#define FF 600 /* two column tiles up */
#define N_EXPERTS 6
#define K 2
#define NT 300

struct fake_peers {
	struct engine *remote_engine; /* the other host's */
	struct scratch scratch;
	const struct moe_layer *layer;
	float *xs_copy, *ys_copy;     /* what travels: the remote experts' rows only */
	uint32_t *bin_start;          /* the remote host's view: its experts' rows packed */
	int fail_expert;              /* -1: none */
	int dispatch_error, collect_error;
	unsigned n_dispatch, n_collect;
	uint32_t rows_sent;
};

static struct mem_layer *layer;
static float *x;
static struct engine *engine;

static int setup(void **state)
{
	struct layer_spec sp = { .d = DM, .ff = FF, .E = N_EXPERTS, .gated = true, .bias = true,
				 .shared_ff = 200, .shared_gate = true, .seed = 42 };
	struct engine_opts o;

	(void)state;
	layer = mem_layer_new(&sp);
	layer->L.router = topk_silu_config(K);
	x = input_new(NT, DM, 7);
	engine_opts_init(&o);
	o.n_workers = 2;
	assert_int_equal(engine_new(&o, &engine, NULL), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	engine_free(engine);
	mem_layer_free(layer);
	free(x);
	return 0;
}

/* Send: pack the remote experts' rows, compute them "there" at once. */
static int fake_dispatch(void *ctx, const struct engine_remote_job *job)
{
	struct fake_peers *p = ctx;
	uint32_t row = 0;
	struct diag d = { { 0 } };

	p->n_dispatch++;
	if (p->dispatch_error)
		return p->dispatch_error;
	for (uint32_t e = 0; e < job->n_experts; e++) {
		uint32_t rows = job->host[e] ? job->bin_start[e + 1] - job->bin_start[e] : 0;

		p->bin_start[e] = row;
		memcpy(p->xs_copy + (size_t)row * DM, job->xs + (size_t)job->bin_start[e] * DM,
		       sizeof(float) * rows * DM);
		row += rows;
	}
	p->bin_start[job->n_experts] = row;
	p->rows_sent = row;
	/* poison, so that rows the remote host does not write show */
	for (size_t i = 0; i < (size_t)row * DM; i++)
		p->ys_copy[i] = NAN;
	return engine_experts_scratch(p->remote_engine, &p->scratch, p->layer, job->activation,
				      p->bin_start, p->xs_copy, p->ys_copy, NULL, &d);
}

static int fake_collect(void *ctx, const struct engine_remote_job *job, uint8_t *failed)
{
	struct fake_peers *p = ctx;

	p->n_collect++;
	if (p->collect_error)
		return p->collect_error;
	for (uint32_t e = 0; e < job->n_experts; e++) {
		uint32_t rows = job->bin_start[e + 1] - job->bin_start[e];

		if (!job->host[e])
			continue;
		if ((int)e == p->fail_expert) {
			failed[e] = 1;
			continue;
		}
		memcpy(job->ys + (size_t)job->bin_start[e] * DM,
		       p->ys_copy + (size_t)p->bin_start[e] * DM, sizeof(float) * rows * DM);
	}
	return 0;
}

static void fake_init(struct fake_peers *p)
{
	struct engine_opts o;

	*p = (struct fake_peers){ .layer = &layer->L, .fail_expert = -1 };
	engine_opts_init(&o);
	o.n_workers = 1;
	assert_int_equal(engine_new(&o, &p->remote_engine, NULL), 0);
	p->xs_copy = malloc(sizeof(float) * NT * K * DM);
	p->ys_copy = malloc(sizeof(float) * NT * K * DM);
	p->bin_start = calloc(N_EXPERTS + 1, sizeof(uint32_t));
	assert_non_null(p->xs_copy);
	assert_non_null(p->ys_copy);
	assert_non_null(p->bin_start);
}

static void fake_done(struct fake_peers *p)
{
	engine_free(p->remote_engine);
	scratch_done(&p->scratch);
	free(p->xs_copy);
	free(p->ys_copy);
	free(p->bin_start);
}

struct result {
	float y[NT * DM];
	int32_t expert[NT * K];
	float weight[NT * K];
	int32_t counts[N_EXPERTS];
	uint32_t n_dropped;
	struct engine_segment_stats seg[2];
};

static int forward(const struct router_config *cfg, const struct engine_remote *remote,
		   struct result *res)
{
	uint32_t seg_rows[2] = { 100, NT - 100 };
	struct engine_batch b = { .x = x, .n_tokens = NT, .output = res->y,
				  .expert_index = res->expert, .expert_weight = res->weight,
				  .tokens_per_expert = res->counts, .remote = remote,
				  .segment_rows = seg_rows, .n_segments = 2,
				  .segment_stats = res->seg };
	struct diag d = { { 0 } };
	int r = engine_forward(engine, &layer->L, cfg, &b, &d);

	res->n_dropped = b.n_dropped;
	return r;
}

static void remote_experts_bitwise(void **state)
{
	const struct router_config cfg = topk_silu_config(K);
	static struct result local, remote_res;
	static const uint16_t splits[][N_EXPERTS] = {
		{ 0, 0, 0, 0, 0, 0 }, { 1, 0, 0, 0, 0, 0 }, { 0, 1, 0, 1, 0, 2 },
		{ 1, 1, 1, 1, 1, 1 }, { 0, 0, 0, 2, 2, 2 },
	};
	struct fake_peers p;

	(void)state;
	fake_init(&p);
	assert_int_equal(forward(&cfg, NULL, &local), 0);
	for (size_t i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
		struct engine_remote remote = { .host = splits[i], .ctx = &p,
						.dispatch = fake_dispatch,
						.collect = fake_collect };
		unsigned before = p.n_dispatch;
		bool any = false;

		for (uint32_t e = 0; e < N_EXPERTS; e++)
			any |= splits[i][e] != 0;
		memset(&remote_res, 0, sizeof(remote_res));
		assert_int_equal(forward(&cfg, &remote, &remote_res), 0);
		assert_memory_equal(remote_res.y, local.y, sizeof(local.y));
		assert_memory_equal(remote_res.expert, local.expert, sizeof(local.expert));
		assert_memory_equal(remote_res.counts, local.counts, sizeof(local.counts));
		assert_int_equal(remote_res.n_dropped, 0);
		/* nothing remote: no call at all */
		assert_int_equal(p.n_dispatch - before, any ? 1 : 0);
		if (any)
			assert_true(p.rows_sent > 64);
	}
	assert_int_equal(p.n_dispatch, p.n_collect);
	fake_done(&p);
}

static void failed_expert_drops_its_slots(void **state)
{
	const struct router_config cfg = topk_silu_config(K);
	static struct result local, res;
	static const uint16_t host[N_EXPERTS] = { 0, 0, 1, 0, 1, 0 };
	struct fake_peers p;
	struct engine_remote remote = { .host = host, .ctx = &p, .dispatch = fake_dispatch,
					.collect = fake_collect };
	uint32_t dropped = 0, dropped_seg0 = 0;

	(void)state;
	fake_init(&p);
	p.fail_expert = 2;
	assert_int_equal(forward(&cfg, NULL, &local), 0);
	assert_int_equal(forward(&cfg, &remote, &res), 0);
	for (uint32_t t = 0; t < NT; t++) {
		bool hit = false;

		for (uint32_t j = 0; j < K; j++) {
			size_t slot = (size_t)t * K + j;

			if (local.expert[slot] == 2) {
				hit = true;
				assert_int_equal(res.expert[slot], -1);
				assert_true(res.weight[slot] == 0.0f);
				dropped++;
				dropped_seg0 += t < 100;
			} else {
				assert_int_equal(res.expert[slot], local.expert[slot]);
			}
		}
		if (!hit)
			assert_memory_equal(res.y + (size_t)t * DM, local.y + (size_t)t * DM,
					    sizeof(float) * DM);
		else
			assert_memory_not_equal(res.y + (size_t)t * DM,
						local.y + (size_t)t * DM, sizeof(float) * DM);
	}
	assert_true(dropped > 0);
	assert_int_equal(res.n_dropped, dropped);
	assert_int_equal(res.seg[0].n_dropped, dropped_seg0);
	assert_int_equal(res.seg[1].n_dropped, dropped - dropped_seg0);
	assert_int_equal(res.counts[2], 0);
	fake_done(&p);
}

/* top-1 with passthrough: a token whose one expert failed keeps its input, scaled. */
static void failed_expert_passthrough(void **state)
{
	struct router_config cfg = topk_silu_config(K);
	static struct result res;
	static const uint16_t host[N_EXPERTS] = { 1, 1, 1, 1, 1, 1 };
	struct fake_peers p;
	struct engine_remote remote = { .host = host, .ctx = &p, .dispatch = fake_dispatch,
					.collect = fake_collect };
	uint32_t seen = 0;

	(void)state;
	cfg.top_k = 1;
	cfg.drop = DROP_PASSTHROUGH;
	cfg.scale = SCALE_NONE;
	layer->L.has_shared = false;
	fake_init(&p);
	p.fail_expert = 3;
	assert_int_equal(forward(&cfg, &remote, &res), 0);
	for (uint32_t t = 0; t < NT; t++) {
		if (res.expert[t] != -1)
			continue;
		seen++;
		assert_memory_equal(res.y + (size_t)t * DM, x + (size_t)t * DM,
				    sizeof(float) * DM);
	}
	layer->L.has_shared = true;
	assert_true(seen > 0);
	assert_int_equal(res.n_dropped, seen);
	fake_done(&p);
}

static void errors_fail_the_batch(void **state)
{
	const struct router_config cfg = topk_silu_config(K);
	static struct result res;
	static const uint16_t host[N_EXPERTS] = { 0, 1, 0, 0, 0, 0 };
	struct fake_peers p;
	struct engine_remote remote = { .host = host, .ctx = &p, .dispatch = fake_dispatch,
					.collect = fake_collect };

	(void)state;
	fake_init(&p);
	p.collect_error = -EHOSTUNREACH;
	assert_int_equal(forward(&cfg, &remote, &res), -EHOSTUNREACH);
	assert_int_equal(p.n_collect, 1);
	p.collect_error = 0;
	p.dispatch_error = -ENOMEM;
	assert_int_equal(forward(&cfg, &remote, &res), -ENOMEM);
	/* a failed dispatch sent nothing: nothing to collect */
	assert_int_equal(p.n_collect, 1);
	/* and the engine serves the next batch */
	p.dispatch_error = 0;
	assert_int_equal(forward(&cfg, &remote, &res), 0);
	fake_done(&p);
}

static void experts_scratch_refuses_bad_bins(void **state)
{
	struct engine_opts o;
	struct engine *e2;
	struct scratch s = { 0 };
	struct diag d = { { 0 } };
	uint32_t bins[N_EXPERTS + 1] = { 0, 4, 2, 4, 4, 4, 4 };
	float in[4 * DM] = { 0 }, out[4 * DM];

	(void)state;
	engine_opts_init(&o);
	o.n_workers = 1;
	assert_int_equal(engine_new(&o, &e2, NULL), 0);
	assert_int_equal(engine_experts_scratch(e2, &s, &layer->L, ACT_SILU_GATED, bins, in, out,
						NULL, &d),
			 -EINVAL);
	bins[0] = 1;
	bins[2] = 4;
	assert_int_equal(engine_experts_scratch(e2, &s, &layer->L, ACT_SILU_GATED, bins, in, out,
						NULL, &d),
			 -EINVAL);
	bins[0] = 0;
	assert_int_equal(engine_experts_scratch(e2, &s, &layer->L, ACT_SILU_GATED, bins, in, out,
						NULL, &d),
			 0);
	engine_free(e2);
	scratch_done(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(remote_experts_bitwise),
		cmocka_unit_test(failed_expert_drops_its_slots),
		cmocka_unit_test(failed_expert_passthrough),
		cmocka_unit_test(errors_fail_the_batch),
		cmocka_unit_test(experts_scratch_refuses_bad_bins),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
