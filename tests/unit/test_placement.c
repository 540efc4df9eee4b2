/* SPDX-License-Identifier: MIT */
/*
 * Tests of the placement policies: interleave's exact map; balanced's maps
 * worked out by hand (equal experts, a hot expert, unequal sizes, memory
 * limits and -ENOSPC), its determinism and its balance bound on seeded
 * random inputs; the expert_nodes syntax with per-layer overrides, kernel
 * node ids that differ from indices, and every malformed entry with its
 * message; clone epochs; replicas and their limits; the JSON description.
 */
#include "test_assert.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>

#include "numa/topology.h"
#include "placement/placement.h"
#include "util/rng.h"

/* ---------------------------------------------------------------- helpers */

/* @n nodes with ids @ids (NULL: 0..n-1) and memory @mem (NULL: unknown). */
static void topo_init(struct topology *t, uint32_t n, const uint32_t *ids, const uint64_t *mem)
{
	memset(t, 0, sizeof(*t));
	t->n_nodes = n;
	t->simulated = true;
	snprintf(t->source, sizeof(t->source), "test");
	for (uint32_t i = 0; i < n; i++) {
		t->nodes[i].id = ids ? ids[i] : i;
		CPU_SET(0, &t->nodes[i].cpus);
		t->nodes[i].n_cpus = 1;
		t->nodes[i].mem_total = mem ? mem[i] : 0;
	}
}

#define MAX_LAYERS  8
#define MAX_EXPERTS 64

/*
 * One test's world: a topology, a model (sizes, loads) in fixed arrays, the
 * input over them and the placement made last (freed by the teardown).
 */
struct fx {
	struct topology t;
	uint32_t n_experts[MAX_LAYERS];
	uint64_t bytes[MAX_LAYERS][MAX_EXPERTS];
	double load[MAX_LAYERS][MAX_EXPERTS];
	const uint64_t *bytes_rows[MAX_LAYERS];
	const double *load_rows[MAX_LAYERS];
	struct placement_input in;
	struct placement *p;
	struct diag d;
};

static int fx_setup(void **state)
{
	*state = calloc(1, sizeof(struct fx));
	return *state ? 0 : -1;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	placement_free(f->p);
	free(f);
	return 0;
}

/*
 * @n_nodes nodes (ids 0.., memory unknown), @n_layers layers of @n_experts
 * experts of @bytes each, no load measured (f->in.load is set by tests that
 * measure).
 */
static void fx_init(struct fx *f, uint32_t n_nodes, uint32_t n_layers, uint32_t n_experts,
		    uint64_t bytes, enum placement_policy policy)
{
	f->p = placement_free(f->p);
	topo_init(&f->t, n_nodes, NULL, NULL);
	for (uint32_t l = 0; l < MAX_LAYERS; l++) {
		f->n_experts[l] = n_experts;
		for (uint32_t e = 0; e < MAX_EXPERTS; e++) {
			f->bytes[l][e] = bytes;
			f->load[l][e] = 0;
		}
		f->bytes_rows[l] = f->bytes[l];
		f->load_rows[l] = f->load[l];
	}
	f->in = (struct placement_input){ .topo = &f->t,
					  .policy = policy,
					  .n_layers = n_layers,
					  .n_experts = f->n_experts,
					  .bytes = f->bytes_rows };
}

/* Make f->p from f->in (the previous placement freed). */
static int fx_make(struct fx *f)
{
	f->p = placement_free(f->p);
	diag_clear(&f->d);
	return placement_make(&f->in, &f->p, &f->d);
}

static int fx_explicit(struct fx *f, const char *spec)
{
	f->in.policy = PLACEMENT_EXPLICIT;
	f->in.expert_nodes = spec;
	return fx_make(f);
}

/* Layer @l's primaries equal @nodes, each expert with one copy. */
static void layer_assert(const struct placement *p, uint32_t l, const uint8_t *nodes, uint32_t n)
{
	ASSERT_EQ(p->layers[l].n_experts, n);
	for (uint32_t e = 0; e < n; e++) {
		if (p->layers[l].experts[e].n_copies != 1 || p->layers[l].experts[e].node[0] != nodes[e])
			fail_msg("layer %u expert %u: node %u (%u copies), expected node %u", l, e,
				 p->layers[l].experts[e].node[0], p->layers[l].experts[e].n_copies,
				 nodes[e]);
	}
}

static void placements_assert_equal(const struct placement *a, const struct placement *b)
{
	ASSERT_EQ(a->n_layers, b->n_layers);
	ASSERT_EQ(a->n_nodes, b->n_nodes);
	for (uint32_t l = 0; l < a->n_layers; l++) {
		ASSERT_EQ(a->layers[l].n_experts, b->layers[l].n_experts);
		for (uint32_t e = 0; e < a->layers[l].n_experts; e++)
			assert_memory_equal(&a->layers[l].experts[e], &b->layers[l].experts[e],
					    sizeof(struct expert_place));
	}
}

/* A list of node indices, for layer_assert(). */
#define NODES(...) ((const uint8_t[]){ __VA_ARGS__ })

/* ---------------------------------------------------------------- policies */

static void test_policy_names(void **state)
{
	enum placement_policy p = PLACEMENT_EXPLICIT;

	(void)state;
	ASSERT_OK(placement_policy_from_name("balanced", &p));
	ASSERT_EQ(p, PLACEMENT_BALANCED);
	ASSERT_OK(placement_policy_from_name("interleave", &p));
	ASSERT_EQ(p, PLACEMENT_INTERLEAVE);
	ASSERT_OK(placement_policy_from_name("explicit", &p));
	ASSERT_EQ(p, PLACEMENT_EXPLICIT);
	ASSERT_ERRNO(placement_policy_from_name("Balanced", &p), EINVAL);
	ASSERT_ERRNO(placement_policy_from_name(NULL, &p), EINVAL);
	ASSERT_EQ(p, PLACEMENT_EXPLICIT); /* untouched on failure */
	assert_string_equal(placement_policy_name(PLACEMENT_BALANCED), "balanced");
	assert_string_equal(placement_policy_name(PLACEMENT_INTERLEAVE), "interleave");
	assert_string_equal(placement_policy_name(PLACEMENT_EXPLICIT), "explicit");
	assert_string_equal(placement_policy_name((enum placement_policy)7), "unknown");
}

static void test_interleave_exact(void **state)
{
	struct fx *f = *state;

	fx_init(f, 4, 3, 8, 1, PLACEMENT_INTERLEAVE);
	f->n_experts[1] = 0; /* a dense layer */
	f->n_experts[2] = 5;
	f->in.bytes = NULL; /* not needed */
	ASSERT_OK(fx_make(f));
	ASSERT_EQ(f->p->epoch, 1);
	ASSERT_EQ(f->p->n_nodes, 4);
	ASSERT_EQ(f->p->n_layers, 3);
	layer_assert(f->p, 0, NODES(0, 1, 2, 3, 0, 1, 2, 3), 8);
	ASSERT_EQ(f->p->layers[1].n_experts, 0);
	assert_null(f->p->layers[1].experts);
	layer_assert(f->p, 2, NODES(0, 1, 2, 3, 0), 5);
	f->p = placement_free(f->p);
	assert_null(f->p);
	assert_null(placement_free(NULL));
}

static void test_balanced_equal(void **state)
{
	struct fx *f = *state;

	/* equal experts over 4 nodes: 2 each */
	fx_init(f, 4, 1, 8, 1000, PLACEMENT_BALANCED);
	ASSERT_OK(fx_make(f));
	layer_assert(f->p, 0, NODES(0, 1, 2, 3, 0, 1, 2, 3), 8);

	/* placement_balanced.c's worked example: bytes break the ties across layers */
	fx_init(f, 4, 2, 6, 1000, PLACEMENT_BALANCED);
	ASSERT_OK(fx_make(f));
	layer_assert(f->p, 0, NODES(0, 1, 2, 3, 0, 1), 6);
	layer_assert(f->p, 1, NODES(2, 3, 0, 1, 2, 3), 6);
}

static void test_balanced_hot_expert(void **state)
{
	struct fx *f = *state;

	/* expert 2 outweighs the other four together: it is alone on node 0 */
	fx_init(f, 2, 1, 5, 64, PLACEMENT_BALANCED);
	f->in.load = f->load_rows;
	for (uint32_t e = 0; e < 5; e++)
		f->load[0][e] = e == 2 ? 10.0 : 1.0;
	ASSERT_OK(fx_make(f));
	layer_assert(f->p, 0, NODES(1, 1, 0, 1, 1), 5);

	/* four nodes: the hot expert alone, the seven others over nodes 1-3 */
	fx_init(f, 4, 1, 8, 64, PLACEMENT_BALANCED);
	f->in.load = f->load_rows;
	for (uint32_t e = 0; e < 8; e++)
		f->load[0][e] = e == 0 ? 100.0 : 1.0;
	ASSERT_OK(fx_make(f));
	layer_assert(f->p, 0, NODES(0, 1, 2, 3, 1, 2, 3, 1), 8);

	/* load 0 weighs nothing: those experts go where the bytes are fewest */
	fx_init(f, 2, 1, 3, 64, PLACEMENT_BALANCED);
	f->in.load = f->load_rows;
	f->load[0][1] = 5;
	ASSERT_OK(fx_make(f));
	layer_assert(f->p, 0, NODES(1, 0, 1), 3);
}

static void test_balanced_bytes(void **state)
{
	struct fx *f = *state;

	/* no load measured: the weight is the size */
	fx_init(f, 2, 1, 5, 100, PLACEMENT_BALANCED);
	f->bytes[0][0] = 400;
	ASSERT_OK(fx_make(f));
	layer_assert(f->p, 0, NODES(0, 1, 1, 1, 1), 5);
}

static void test_balanced_memory(void **state)
{
	struct fx *f = *state;

	/* node 0 holds one expert: the third, which would go there on weight, cannot */
	fx_init(f, 2, 1, 3, 100, PLACEMENT_BALANCED);
	topo_init(&f->t, 2, NULL, (const uint64_t[]){ 100, 1000 });
	ASSERT_OK(fx_make(f));
	layer_assert(f->p, 0, NODES(0, 1, 1), 3);

	/* exactly full fits; one expert more does not */
	fx_init(f, 2, 1, 6, 100, PLACEMENT_BALANCED);
	topo_init(&f->t, 2, NULL, (const uint64_t[]){ 300, 300 });
	ASSERT_OK(fx_make(f));
	f->n_experts[0] = 7;
	ASSERT_ERRNO(fx_make(f), ENOSPC);
	assert_null(f->p);
	assert_non_null(strstr(f->d.msg, "layer 0 expert 6 (100 bytes) fits on no node"));

	/* memory is shared by the layers: the second layer runs out */
	f->in.n_layers = 2;
	f->n_experts[0] = 4;
	f->n_experts[1] = 4;
	ASSERT_ERRNO(fx_make(f), ENOSPC);
	assert_non_null(strstr(f->d.msg, "layer 1 expert 2 (100 bytes)"));

	/* an expert larger than any node, and sizes near 2^64 that must not wrap */
	fx_init(f, 2, 1, 2, UINT64_MAX - 20, PLACEMENT_BALANCED);
	topo_init(&f->t, 2, NULL, (const uint64_t[]){ 300, UINT64_MAX - 10 });
	ASSERT_ERRNO(fx_make(f), ENOSPC);
	assert_non_null(strstr(f->d.msg, "layer 0 expert 1"));

	/* mem 0 is unknown, not empty */
	fx_init(f, 2, 1, 4, 1000, PLACEMENT_BALANCED);
	topo_init(&f->t, 2, NULL, (const uint64_t[]){ 0, 100 });
	ASSERT_OK(fx_make(f));
	layer_assert(f->p, 0, NODES(0, 0, 0, 0), 4);
}

/*
 * Seeded random sizes and loads: two runs give the same map, and each
 * layer's heaviest node carries at most the mean plus the heaviest expert
 * (the greedy's bound).
 */
static void test_balanced_deterministic_and_bounded(void **state)
{
	struct fx *f = *state;
	struct placement *first = NULL;
	uint64_t seed = 42;

	fx_init(f, 4, 6, 60, 0, PLACEMENT_BALANCED);
	f->in.load = f->load_rows;
	for (uint32_t l = 0; l < 6; l++)
		for (uint32_t e = 0; e < 60; e++) {
			f->bytes[l][e] = 1000 + rng_splitmix64(&seed) % 5000;
			f->load[l][e] = rng_uniform01(&seed) * 4;
		}
	ASSERT_OK(fx_make(f));
	first = f->p;
	f->p = NULL;
	ASSERT_OK(fx_make(f));
	placements_assert_equal(first, f->p);
	placement_free(first);
	for (uint32_t l = 0; l < 6; l++) {
		double node_w[4] = { 0 }, total = 0, max_item = 0, max_node = 0;

		for (uint32_t e = 0; e < 60; e++) {
			double w = f->load[l][e] * (double)f->bytes[l][e];

			node_w[f->p->layers[l].experts[e].node[0]] += w;
			total += w;
			max_item = w > max_item ? w : max_item;
		}
		for (int n = 0; n < 4; n++)
			max_node = node_w[n] > max_node ? node_w[n] : max_node;
		if (max_node > total / 4 + max_item)
			fail_msg("layer %u: heaviest node %g > mean %g + heaviest expert %g", l,
				 max_node, total / 4, max_item);
	}
}

static void test_balanced_bad_input(void **state)
{
	struct fx *f = *state;

	fx_init(f, 2, 2, 4, 10, PLACEMENT_BALANCED);
	f->in.load = f->load_rows;
	f->load[1][3] = -1;
	ASSERT_ERRNO(fx_make(f), EINVAL);
	assert_non_null(strstr(f->d.msg, "layer 1 expert 3: load -1"));
	f->load[1][3] = NAN;
	ASSERT_ERRNO(fx_make(f), EINVAL);
	assert_non_null(strstr(f->d.msg, "layer 1 expert 3: load nan"));

	f->in.load = NULL;
	f->in.bytes = NULL;
	ASSERT_ERRNO(fx_make(f), EINVAL);
	assert_non_null(strstr(f->d.msg, "no expert sizes"));

	f->in.bytes = f->bytes_rows;
	f->in.topo = NULL;
	ASSERT_ERRNO(fx_make(f), EINVAL);
	f->t.n_nodes = 0;
	f->in.topo = &f->t;
	ASSERT_ERRNO(fx_make(f), EINVAL);
	assert_null(f->p);
}

/* ---------------------------------------------------------------- explicit */

static void test_explicit_layers(void **state)
{
	struct fx *f = *state;
	const uint8_t *halves = NODES(0, 0, 0, 0, 1, 1, 1, 1);
	const uint8_t *override = NODES(1, 0, 0, 0, 1, 1, 1, 1);

	fx_init(f, 2, 3, 8, 1, PLACEMENT_EXPLICIT);
	ASSERT_OK(fx_explicit(f, "0-3@0;4-7@1"));
	for (uint32_t l = 0; l < 3; l++)
		layer_assert(f->p, l, halves, 8);

	/* the setting test_config uses: layer 2's expert 0 moves, nothing else */
	ASSERT_OK(fx_explicit(f, "0-3@0;4-7@1;2:0@1"));
	layer_assert(f->p, 0, halves, 8);
	layer_assert(f->p, 1, halves, 8);
	layer_assert(f->p, 2, override, 8);

	/* the override may come first, and spaces around entries are fine */
	ASSERT_OK(fx_explicit(f, " 2:0@1 ; 0-3@0;\t4,5,6-7@1 "));
	layer_assert(f->p, 2, override, 8);
	layer_assert(f->p, 1, halves, 8);

	/* only a layer entry: the other layers are interleaved */
	ASSERT_OK(fx_explicit(f, "1:0-7@1"));
	layer_assert(f->p, 0, NODES(0, 1, 0, 1, 0, 1, 0, 1), 8);
	layer_assert(f->p, 1, NODES(1, 1, 1, 1, 1, 1, 1, 1), 8);
	layer_assert(f->p, 2, NODES(0, 1, 0, 1, 0, 1, 0, 1), 8);
	ASSERT_EQ(f->p->epoch, 1);
}

static void test_explicit_unnamed_and_ids(void **state)
{
	struct fx *f = *state;

	/* experts named nowhere: e mod 4 */
	fx_init(f, 4, 1, 8, 1, PLACEMENT_EXPLICIT);
	ASSERT_OK(fx_explicit(f, "0,5@3"));
	layer_assert(f->p, 0, NODES(3, 1, 2, 3, 0, 3, 2, 3), 8);

	/* NODE is a kernel id; the map holds indices (a cpuset hiding nodes 0, 1, 3, 4) */
	topo_init(&f->t, 2, (const uint32_t[]){ 2, 5 }, NULL);
	ASSERT_OK(fx_explicit(f, "0-3@5;4-7@2"));
	layer_assert(f->p, 0, NODES(1, 1, 1, 1, 0, 0, 0, 0), 8);
	ASSERT_ERRNO(fx_explicit(f, "0-3@0"), EINVAL);
	assert_non_null(strstr(f->d.msg, "expert_nodes entry '0-3@0': no node 0 in the topology"));

	/* layers of different sizes: shared entries reach as far as each layer goes */
	fx_init(f, 2, 3, 8, 1, PLACEMENT_EXPLICIT);
	f->n_experts[1] = 0;
	f->n_experts[2] = 4;
	ASSERT_OK(fx_explicit(f, "6-7@0;0@1"));
	layer_assert(f->p, 0, NODES(1, 1, 0, 1, 0, 1, 0, 0), 8);
	ASSERT_EQ(f->p->layers[1].n_experts, 0);
	layer_assert(f->p, 2, NODES(1, 1, 0, 1), 4);
}

struct bad_spec {
	const char *spec;
	const char *msg; /* a part of the message */
};

static void test_explicit_errors(void **state)
{
	static const struct bad_spec cases[] = {
		{ NULL, "expert_nodes is empty" },
		{ "", "expert_nodes is empty" },
		{ " \t ", "expert_nodes is empty" },
		{ "0-3@7", "expert_nodes entry '0-3@7': no node 7 in the topology" },
		{ "0-3@0;3@1", "entry '3@1': expert 3 already placed by entry '0-3@0'" },
		{ "0-3@0;2,2@1", "entry '2,2@1': expert 2 already placed by entry '0-3@0'" },
		{ "1@0;1@0", "entry '1@0': expert 1 already placed by entry '1@0'" },
		{ "0-8@0", "entry '0-8@0': expert 8 beyond the model's 8 experts" },
		{ "4294967295@0", "expert 4294967295 beyond the model's 8 experts" },
		{ "2:0@0;2:0@1", "entry '2:0@1': expert 0 already placed by entry '2:0@0'" },
		{ "2:8@0", "entry '2:8@0': expert 8 beyond layer 2's 8 experts" },
		{ "1:0@0", "entry '1:0@0': expert 0 beyond layer 1's 0 experts" },
		{ "3:0@0", "entry '3:0@0': layer 3 beyond the model's 3 layers" },
		{ "0-3", "entry '0-3': expected [LAYER:]EXPERTS@NODE" },
		{ "0-3@0@1", "entry '0-3@0@1': expected [LAYER:]EXPERTS@NODE" },
		{ "0@1:1", "entry '0@1:1': expected [LAYER:]EXPERTS@NODE" },
		{ "1:2:0@0", "entry '1:2:0@0': expected [LAYER:]EXPERTS@NODE" },
		{ "@0", "entry '@0': EXPERTS is not a list such as 0-3,6" },
		{ "a@0", "entry 'a@0': EXPERTS" },
		{ "3-1@0", "entry '3-1@0': EXPERTS" },
		{ "0,@0", "entry '0,@0': EXPERTS" },
		{ "0 1@0", "entry '0 1@0': EXPERTS" },
		{ "0:@0", "entry '0:@0': EXPERTS" },
		{ "0-3@", "entry '0-3@': NODE is not a number" },
		{ "0-3@x", "NODE is not a number" },
		{ "0-3@-1", "NODE is not a number" },
		{ "0-3@ 1", "NODE is not a number" },
		{ "x:0@0", "entry 'x:0@0': LAYER is not a number" },
		{ ":0@0", "LAYER is not a number" },
		{ "0-3@0;;4@1", "empty entry" },
		{ ";0@0", "empty entry" },
		{ "0@0;", "empty entry" },
		{ "0@0; ", "empty entry" },
		/* a bad entry anywhere fails the whole setting */
		{ "0-3@0;2:0@1;2:9@1", "entry '2:9@1': expert 9 beyond layer 2's 8 experts" },
	};
	struct fx *f = *state;

	fx_init(f, 2, 3, 8, 1, PLACEMENT_EXPLICIT);
	f->n_experts[1] = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = fx_explicit(f, cases[i].spec);

		if (r != -EINVAL || !strstr(f->d.msg, cases[i].msg))
			fail_msg("case %zu '%s': r %d, message '%s', expected -EINVAL and '%s'", i,
				 cases[i].spec ? cases[i].spec : "(null)", r, f->d.msg,
				 cases[i].msg);
		assert_null(f->p);
	}
}

/* ---------------------------------------------------------------- clone, replicas */

static void test_clone_epoch(void **state)
{
	struct fx *f = *state;
	struct placement *c = NULL, *cc = NULL;

	fx_init(f, 4, 3, 6, 1, PLACEMENT_INTERLEAVE);
	f->n_experts[1] = 0;
	ASSERT_OK(fx_make(f));
	ASSERT_OK(placement_clone(f->p, &c));
	ASSERT_EQ(c->epoch, 2);
	placements_assert_equal(f->p, c);
	assert_ptr_not_equal(f->p->layers, c->layers);
	assert_ptr_not_equal(f->p->layers[0].experts, c->layers[0].experts);

	/* a change to the copy leaves the published map alone, and carries on */
	ASSERT_OK(placement_add_replica(c, 2, 5, 3));
	ASSERT_EQ(f->p->layers[2].experts[5].n_copies, 1);
	ASSERT_OK(placement_clone(c, &cc));
	ASSERT_EQ(cc->epoch, 3);
	placements_assert_equal(c, cc);
	ASSERT_EQ(cc->layers[2].experts[5].n_copies, 2);
	ASSERT_EQ(cc->layers[2].experts[5].node[1], 3);
	placement_free(cc);
	placement_free(c);
}

static void test_replicas(void **state)
{
	struct fx *f = *state;
	struct placement *p;

	fx_init(f, 2, 2, 8, 1, PLACEMENT_INTERLEAVE);
	ASSERT_OK(fx_make(f));
	p = f->p;
	ASSERT_OK(placement_add_replica(p, 0, 0, 1));
	ASSERT_EQ(p->layers[0].experts[0].n_copies, 2);
	ASSERT_EQ(p->layers[0].experts[0].node[0], 0); /* the primary stays first */
	ASSERT_EQ(p->layers[0].experts[0].node[1], 1);
	ASSERT_ERRNO(placement_add_replica(p, 0, 0, 1), EEXIST);
	ASSERT_ERRNO(placement_add_replica(p, 0, 0, 0), EEXIST); /* the primary's node */
	ASSERT_ERRNO(placement_add_replica(p, 1, 1, 1), EEXIST);
	ASSERT_OK(placement_add_replica(p, 1, 1, 0));
	ASSERT_ERRNO(placement_add_replica(p, 2, 0, 1), EINVAL);
	ASSERT_ERRNO(placement_add_replica(p, 0, 8, 1), EINVAL);
	ASSERT_ERRNO(placement_add_replica(p, 0, 2, 2), EINVAL);
	ASSERT_EQ(p->layers[0].experts[2].n_copies, 1);

	/* nine nodes: the ninth copy is one too many */
	fx_init(f, PLACEMENT_MAX_COPIES + 1, 2, 8, 1, PLACEMENT_INTERLEAVE);
	ASSERT_OK(fx_make(f));
	p = f->p;
	for (uint32_t n = 1; n < PLACEMENT_MAX_COPIES; n++)
		ASSERT_OK(placement_add_replica(p, 1, 0, n));
	ASSERT_EQ(p->layers[1].experts[0].n_copies, PLACEMENT_MAX_COPIES);
	ASSERT_ERRNO(placement_add_replica(p, 1, 0, PLACEMENT_MAX_COPIES), E2BIG);
	ASSERT_ERRNO(placement_add_replica(p, 1, 0, 3), EEXIST);
	ASSERT_EQ(p->layers[1].experts[0].n_copies, PLACEMENT_MAX_COPIES);
}

/* ---------------------------------------------------------------- JSON */

static void json_assert(json_t *j, const char *expect)
{
	char *s;

	assert_non_null(j);
	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	assert_non_null(s);
	if (strcmp(s, expect) != 0)
		fail_msg("JSON\n  got      %s\n  expected %s", s, expect);
	free(s);
	json_decref(j);
}

static void test_json(void **state)
{
	struct fx *f = *state;
	struct topology other;

	fx_init(f, 2, 2, 3, 0, PLACEMENT_INTERLEAVE);
	topo_init(&f->t, 2, (const uint32_t[]){ 0, 3 }, NULL);
	f->n_experts[1] = 0;
	f->bytes[0][0] = 10;
	f->bytes[0][1] = 20;
	f->bytes[0][2] = 30;
	f->load[0][0] = 0.5;
	f->load[0][1] = 1;
	f->load[0][2] = 2;
	f->bytes_rows[1] = NULL;
	f->load_rows[1] = NULL;
	ASSERT_OK(fx_make(f));
	ASSERT_OK(placement_add_replica(f->p, 0, 1, 0));
	json_assert(placement_to_json(f->p, &f->t, f->bytes_rows, f->load_rows),
		    "{\"epoch\":1,\"layers\":["
		    "{\"experts\":["
		    "{\"bytes\":10,\"expert\":0,\"load\":0.5,\"nodes\":[0]},"
		    "{\"bytes\":20,\"expert\":1,\"load\":1.0,\"nodes\":[3,0]},"
		    "{\"bytes\":30,\"expert\":2,\"load\":2.0,\"nodes\":[0]}],\"layer\":0},"
		    "{\"experts\":[],\"layer\":1}],"
		    "\"nodes\":[{\"bytes\":60,\"experts\":3,\"node\":0},"
		    "{\"bytes\":20,\"experts\":1,\"node\":3}]}");
	json_assert(placement_to_json(f->p, &f->t, NULL, NULL),
		    "{\"epoch\":1,\"layers\":["
		    "{\"experts\":["
		    "{\"expert\":0,\"nodes\":[0]},"
		    "{\"expert\":1,\"nodes\":[3,0]},"
		    "{\"expert\":2,\"nodes\":[0]}],\"layer\":0},"
		    "{\"experts\":[],\"layer\":1}],"
		    "\"nodes\":[{\"experts\":3,\"node\":0},{\"experts\":1,\"node\":3}]}");
	/* not the topology it was made over */
	topo_init(&other, 3, NULL, NULL);
	assert_null(placement_to_json(f->p, &other, NULL, NULL));
}

#define FX_TEST(_t) cmocka_unit_test_setup_teardown(_t, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policy_names),
		FX_TEST(test_interleave_exact),
		FX_TEST(test_balanced_equal),
		FX_TEST(test_balanced_hot_expert),
		FX_TEST(test_balanced_bytes),
		FX_TEST(test_balanced_memory),
		FX_TEST(test_balanced_deterministic_and_bounded),
		FX_TEST(test_balanced_bad_input),
		FX_TEST(test_explicit_layers),
		FX_TEST(test_explicit_unnamed_and_ids),
		FX_TEST(test_explicit_errors),
		FX_TEST(test_clone_epoch),
		FX_TEST(test_replicas),
		FX_TEST(test_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
