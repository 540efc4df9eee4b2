/* SPDX-License-Identifier: MIT */
/*
 * Tests of changes to the expert map while serving (expert_store_change:
 * replicate, move, drop) on a real store (objects in a private folder of
 * /dev/shm, a generated safetensors model) over simulated topologies of 2,
 * 4 and 8 nodes, with an engine whose pool has those nodes:
 *
 * - after any sequence of changes the output is bitwise the one of the
 *   first map, and the placement is what the changes say;
 * - a replica's weights are really read: the loaded copy is poisoned with
 *   NaN after the expert moved away, and the output does not change;
 * - refusals come at once with their errno, and change nothing;
 * - replica_budget bounds the copies, and a dropped copy's space comes back
 *   once no map uses it; a move back to the loaded node needs no space;
 * - forwards running on another thread while changes are published all
 *   give the reference output (a run holds the map it started with).
 */
#include "test_assert.h"
#include "test_layer.h"
#include "test_topo.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "model/synth_model.h"
#include "store/expert_store.h"

#define DM 64
#define FF 1040 /* several column tiles per expert: copies share an expert's work */
#define N_EXPERTS 4
#define N_LAYERS 2
#define NT 300

/* The bytes of one expert's copy: w1, w2, w3 and both biases, 64-byte aligned. */
#define EXPERT_BYTES (3u * FF * DM * 4u + FF * 4u + DM * 4u)
#define PAGE 4096u
#define ONE_COPY (((EXPERT_BYTES + PAGE - 1) / PAGE) * PAGE)

static char model_dir[64];
static char model_path[128];
static float x[NT * DM];

struct fixture {
	struct topology topo;
	char store_dir[64];
	struct expert_store *store;
	struct engine *engine;
	float reference[N_LAYERS][NT * DM]; /* each layer's output with the first map */
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void tree_remove(const char *dir)
{
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static int group_setup(void **state)
{
	struct synth_opts o;
	struct diag d = { { 0 } };
	uint64_t seed = 7;

	(void)state;
	strcpy(model_dir, "/tmp/moed-store-change.XXXXXX");
	if (!mkdtemp(model_dir))
		return -1;
	snprintf(model_path, sizeof(model_path), "%s/model.safetensors", model_dir);
	synth_opts_init(&o);
	o.output = model_path;
	o.d_model = DM;
	o.d_ff = FF;
	o.n_experts = N_EXPERTS;
	o.n_layers = N_LAYERS;
	o.bias = 1;
	o.settings[0] = "router=topk";
	o.settings[1] = "top_k=2";
	o.settings[2] = "activation=silu_gated";
	o.n_settings = 3;
	if (synth_model_write(&o, &d) < 0) {
		fprintf(stderr, "synth_model_write: %s\n", d.msg);
		return -1;
	}
	for (size_t i = 0; i < NT * DM; i++)
		x[i] = (float)rng_normal(&seed);
	return 0;
}

/*
 * Every store folder a fixture made, removed here too: a failed assertion
 * leaves its test before fixture_free(), and its objects would stay in
 * /dev/shm (memory) otherwise.
 */
static char made_dirs[16][64];
static unsigned n_made_dirs;

static int group_teardown(void **state)
{
	(void)state;
	for (unsigned i = 0; i < n_made_dirs; i++)
		tree_remove(made_dirs[i]);
	tree_remove(model_dir);
	return 0;
}

static void forward(struct fixture *f, struct expert_map *m, uint32_t layer, float *out)
{
	const struct moe_layer *L = moe_model_layer(expert_store_model(f->store), layer);
	struct engine_batch b = { .x = x, .n_tokens = NT, .output = out };
	struct diag d = { { 0 } };
	int r;

	b.homes = expert_map_homes(m, layer);
	r = engine_forward(f->engine, L, &L->router, &b, &d);
	if (r < 0)
		fail_msg("engine_forward: %s (%s)", d.msg, strerror(-r));
}

/* Forward every layer with the current map; bitwise the reference? */
static bool current_map_gives_reference(struct fixture *f)
{
	static float out[NT * DM];
	struct expert_map *m = expert_store_map_get(f->store);
	bool same = true;

	for (uint32_t l = 0; l < N_LAYERS; l++) {
		forward(f, m, l, out);
		same = same && memcmp(out, f->reference[l], sizeof(out)) == 0;
	}
	expert_map_put(m);
	return same;
}

static struct fixture *fixture_new(uint32_t n_nodes, uint64_t budget)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct expert_store_opts so = { 0 };
	struct engine_opts eo;
	struct diag d = { { 0 } };
	struct expert_map *m;
	int r;

	assert_non_null(f);
	test_topo_make(&f->topo, n_nodes);
	strcpy(f->store_dir, "/dev/shm/moed-store-change.XXXXXX");
	assert_non_null(mkdtemp(f->store_dir));
	if (n_made_dirs < sizeof(made_dirs) / sizeof(made_dirs[0]))
		strcpy(made_dirs[n_made_dirs++], f->store_dir);
	so.dir = f->store_dir;
	so.name = "t";
	so.keep = false;
	so.replica_budget = budget;
	so.topo = &f->topo;
	so.policy = PLACEMENT_INTERLEAVE;
	r = expert_store_open(model_path, &so, &f->store, &d);
	if (r < 0)
		fail_msg("expert_store_open: %s (%s)", d.msg, strerror(-r));
	engine_opts_init(&eo);
	eo.topo = &f->topo;
	r = engine_new(&eo, &f->engine, &d);
	if (r < 0)
		fail_msg("engine_new: %s (%s)", d.msg, strerror(-r));
	m = expert_store_map_get(f->store);
	assert_int_equal(expert_map_epoch(m), 1);
	for (uint32_t l = 0; l < N_LAYERS; l++)
		forward(f, m, l, f->reference[l]);
	expert_map_put(m);
	return f;
}

static void fixture_free(struct fixture *f)
{
	engine_free(f->engine);
	expert_store_close(f->store);
	tree_remove(f->store_dir);
	free(f);
}

static int64_t change(struct fixture *f, enum expert_change_op op, uint32_t layer,
		      uint32_t expert, uint32_t node)
{
	struct expert_change c = { .op = op, .layer = layer, .expert = expert, .node = node };
	struct diag d = { { 0 } };

	return expert_store_change(f->store, &c, &d);
}

static const struct expert_place *place_of(struct expert_map *m, uint32_t layer,
					   uint32_t expert)
{
	return &expert_map_placement(m)->layers[layer].experts[expert];
}

/* ---------------------------------------------------------------- tests */

/*
 * Per node count: every expert of layer 0 gets a replica on the next node,
 * expert 2 of layer 1 moves to the last node, expert 0 of layer 0 loses its
 * loaded copy. Epochs are consecutive; placement and output as expected.
 */
static void test_changes_keep_output_bitwise(void **state)
{
	static const uint32_t node_counts[] = { 2, 4, 8 };

	(void)state;
	for (size_t i = 0; i < sizeof(node_counts) / sizeof(node_counts[0]); i++) {
		uint32_t n = node_counts[i];
		struct fixture *f = fixture_new(n, 8 * ONE_COPY);
		int64_t epoch = 1, r;
		struct expert_map *m;

		for (uint32_t e = 0; e < N_EXPERTS; e++) {
			r = change(f, EXPERT_REPLICATE, 0, e, (e + 1) % n);
			assert_int_equal(r, ++epoch);
		}
		assert_int_equal(change(f, EXPERT_MOVE, 1, 2, n - 1), ++epoch);
		assert_int_equal(change(f, EXPERT_DROP, 0, 0, 0), ++epoch);
		expert_store_changes_wait(f->store);

		m = expert_store_map_get(f->store);
		assert_int_equal(expert_map_epoch(m), epoch);
		/* interleave: expert e of each layer was on node e % n */
		assert_int_equal(place_of(m, 0, 0)->n_copies, 1);
		assert_int_equal(place_of(m, 0, 0)->node[0], 1 % n);
		for (uint32_t e = 1; e < N_EXPERTS; e++) {
			assert_int_equal(place_of(m, 0, e)->n_copies, 2);
			assert_int_equal(place_of(m, 0, e)->node[0], e % n);
			assert_int_equal(place_of(m, 0, e)->node[1], (e + 1) % n);
		}
		assert_int_equal(place_of(m, 1, 2)->n_copies, 1);
		assert_int_equal(place_of(m, 1, 2)->node[0], n - 1);
		/* the replicas are copies of their own, in the node's object */
		for (uint32_t e = 1; e < N_EXPERTS; e++) {
			const struct expert_home *h = &expert_map_homes(m, 0)[e];

			assert_int_equal(h->n_copies, 2);
			assert_ptr_not_equal(h->copy[0].ffn->w1, h->copy[1].ffn->w1);
			assert_int_equal(memcmp(h->copy[0].ffn->w1, h->copy[1].ffn->w1,
						sizeof(float) * FF * DM), 0);
			assert_int_equal(memcmp(h->copy[0].ffn->b2, h->copy[1].ffn->b2,
						sizeof(float) * DM), 0);
			assert_int_equal((uintptr_t)h->copy[1].ffn->w2 % 64, 0);
		}
		expert_map_put(m);
		assert_true(current_map_gives_reference(f));
		fixture_free(f);
	}
}

/*
 * After expert 2 of layer 0 moved to a node without its loaded copy, that
 * copy is poisoned: the output stays the reference, so the replica is read.
 */
static void test_replica_weights_are_read(void **state)
{
	struct fixture *f = fixture_new(4, 2 * ONE_COPY);
	const struct moe_layer *L = moe_model_layer(expert_store_model(f->store), 0);
	float *loaded_w1 = (float *)(uintptr_t)L->experts[2].ffn.w1;

	(void)state;
	assert_true(change(f, EXPERT_MOVE, 0, 2, 3) > 0);
	expert_store_changes_wait(f->store);
	for (size_t i = 0; i < (size_t)FF * DM; i++)
		loaded_w1[i] = NAN;
	assert_true(current_map_gives_reference(f));
	fixture_free(f);
}

static void test_refusals_change_nothing(void **state)
{
	struct fixture *f = fixture_new(2, 0);
	struct expert_map *m;

	(void)state;
	assert_int_equal(change(f, EXPERT_REPLICATE, N_LAYERS, 0, 1), -EINVAL);
	assert_int_equal(change(f, EXPERT_REPLICATE, 0, N_EXPERTS, 1), -EINVAL);
	assert_int_equal(change(f, EXPERT_REPLICATE, 0, 0, 2), -EINVAL);
	assert_int_equal(change(f, (enum expert_change_op)7, 0, 0, 1), -EINVAL);
	assert_int_equal(change(f, EXPERT_REPLICATE, 0, 0, 0), -EEXIST); /* expert 0 is on 0 */
	assert_int_equal(change(f, EXPERT_MOVE, 0, 0, 0), -EEXIST);
	assert_int_equal(change(f, EXPERT_DROP, 0, 0, 1), -ENOENT);
	assert_int_equal(change(f, EXPERT_DROP, 0, 0, 0), -EPERM);
	assert_int_equal(change(f, EXPERT_REPLICATE, 0, 0, 1), -ENOSPC); /* budget 0 */
	assert_int_equal(change(f, EXPERT_MOVE, 0, 0, 1), -ENOSPC);
	expert_store_changes_wait(f->store);
	m = expert_store_map_get(f->store);
	assert_int_equal(expert_map_epoch(m), 1);
	assert_int_equal(place_of(m, 0, 0)->n_copies, 1);
	assert_int_equal(place_of(m, 0, 0)->node[0], 0);
	expert_map_put(m);
	fixture_free(f);
}

/*
 * A budget of one copy: a second replica does not fit; once the first is
 * dropped and no map holds it, its space serves the next. A move back to
 * the node of the loaded copy needs no space at all.
 */
static void test_budget_and_space_reuse(void **state)
{
	struct fixture *f = fixture_new(2, ONE_COPY);
	int64_t e1;

	(void)state;
	assert_true(change(f, EXPERT_REPLICATE, 0, 0, 1) > 0);
	assert_int_equal(change(f, EXPERT_REPLICATE, 0, 2, 1), -ENOSPC);
	assert_true(change(f, EXPERT_DROP, 0, 0, 1) > 0);
	expert_store_changes_wait(f->store); /* no run holds an older map */
	assert_true(change(f, EXPERT_REPLICATE, 0, 2, 1) > 0);

	/* expert 2 of layer 1 was loaded on node 0: away to node 1 takes
	 * node 1's budget... */
	assert_int_equal(change(f, EXPERT_MOVE, 1, 2, 1), -ENOSPC);
	assert_true(change(f, EXPERT_DROP, 0, 2, 1) > 0);
	expert_store_changes_wait(f->store);
	assert_true(change(f, EXPERT_MOVE, 1, 2, 1) > 0);
	/* ...and back home takes nothing, though node 0's budget is untouched
	 * and node 1's used: the loaded copy is still there */
	e1 = change(f, EXPERT_MOVE, 1, 2, 0);
	assert_true(e1 > 0);
	expert_store_changes_wait(f->store);
	assert_true(current_map_gives_reference(f));
	fixture_free(f);
}

struct runner {
	struct fixture *f;
	atomic_bool stop;
	atomic_uint n_runs;
	unsigned n_wrong;
};

static void *run_forwards(void *arg)
{
	struct runner *r = arg;

	while (!atomic_load(&r->stop)) {
		if (!current_map_gives_reference(r->f))
			r->n_wrong++;
		atomic_fetch_add(&r->n_runs, 1);
	}
	return NULL;
}

/*
 * Forwards on one thread while another publishes changes: rounds of
 * replicate, move there, move back home (the replica goes), until the
 * forwards have seen many maps come and go.
 */
static void test_forwards_during_changes(void **state)
{
	/* room for a copy an older map still holds, besides the round's own */
	struct runner run = { .f = fixture_new(2, 4 * ONE_COPY) };
	unsigned round;
	pthread_t t;

	(void)state;
	assert_int_equal(pthread_create(&t, NULL, run_forwards, &run), 0);
	for (round = 0; round < 20 || (atomic_load(&run.n_runs) < 40 && round < 2000); round++) {
		uint32_t layer = round % N_LAYERS, e = round / N_LAYERS % N_EXPERTS;
		uint32_t home = e % 2, other = 1 - home;

		assert_true(change(run.f, EXPERT_REPLICATE, layer, e, other) > 0);
		assert_true(change(run.f, EXPERT_MOVE, layer, e, other) > 0);
		assert_true(change(run.f, EXPERT_MOVE, layer, e, home) > 0);
		expert_store_changes_wait(run.f->store);
	}
	atomic_store(&run.stop, true);
	pthread_join(t, NULL);
	assert_int_equal(run.n_wrong, 0);
	print_message("%u forwards during %u changes\n", atomic_load(&run.n_runs), 3 * round);
	fixture_free(run.f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_changes_keep_output_bitwise),
		cmocka_unit_test(test_replica_weights_are_read),
		cmocka_unit_test(test_refusals_change_nothing),
		cmocka_unit_test(test_budget_and_space_reuse),
		cmocka_unit_test(test_forwards_during_changes),
	};

	if (!test_topo_cpus_allowed()) {
		fprintf(stderr, "test_store_change: needs CPUs 0 and 1 (the hand-built "
				"topologies use them), skipping\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
