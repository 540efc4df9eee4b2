/* SPDX-License-Identifier: MIT */
/*
 * Tests of load_record (the measured load kept across restarts) and of its
 * use by the store's balanced placement:
 * - what is written reads back, layer by layer (null for a layer without
 *   experts); no file is -ENOENT; a record of another shape, a negative or
 *   non-integer count, or broken JSON is -EINVAL with a reason;
 * - a store opened with policy balanced and a record in which one expert
 *   took most tokens places that expert on a node of its own (the other
 *   experts share the other node); without the record, experts split 2:2.
 */
#include "test_assert.h"
#include "test_topo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/synth_model.h"
#include "store/expert_store.h"
#include "store/load_record.h"

static char dir[] = "/tmp/test_load_record.XXXXXX";
static char shm_dir[] = "/dev/shm/test_load_record.XXXXXX";
static char path[128], model_path[128];

static void write_text(const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_round_trip(void **state)
{
	uint64_t t0[3] = { 5, 0, 7 }, t2[2] = { 1, 2 };
	struct layer_stats stats[3] = { { .tokens_per_expert = t0, .n_experts = 3 },
					{ 0 },
					{ .tokens_per_expert = t2, .n_experts = 2 } };
	const uint32_t n_experts[3] = { 3, 0, 2 };
	struct diag d = { { 0 } };
	double **load = NULL;

	(void)state;
	unlink(path);
	ASSERT_ERRNO(load_record_read(path, 3, n_experts, &load, &d), ENOENT);
	ASSERT_OK(load_record_write(path, stats, 3, &d));
	ASSERT_OK(load_record_read(path, 3, n_experts, &load, &d));
	assert_true(load[0][0] == 5 && load[0][1] == 0 && load[0][2] == 7);
	assert_null(load[1]);
	assert_true(load[2][0] == 1 && load[2][1] == 2);
	load = load_record_free(load, 3);
	assert_null(load);
}

static void test_mismatch_refused(void **state)
{
	static const char *const bad[] = {
		"{\"version\": 1, \"layers\": [[1, 2, 3], null]}",      /* 2 layers, not 3 */
		"{\"version\": 1, \"layers\": [[1, 2], null, [1, 2]]}", /* 2 experts, not 3 */
		"{\"version\": 1, \"layers\": [[1, 2, 3], [1], [1, 2]]}", /* layer 1 has none */
		"{\"version\": 1, \"layers\": [[1, -2, 3], null, [1, 2]]}",
		"{\"version\": 1, \"layers\": [[1, 2.5, 3], null, [1, 2]]}",
		"{\"version\": 2, \"layers\": [[1, 2, 3], null, [1, 2]]}",
		"{\"version\": 1, \"layers\": [[1, 2, 3], null, [1, 2]]", /* broken JSON */
	};
	const uint32_t n_experts[3] = { 3, 0, 2 };

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct diag d = { { 0 } };
		double **load = NULL;

		write_text(bad[i]);
		ASSERT_ERRNO(load_record_read(path, 3, n_experts, &load, &d), EINVAL);
		assert_null(load);
		assert_true(d.msg[0] != '\0');
	}
}

/* Experts per node of layer 0 under policy balanced over 2 simulated nodes. */
static void balanced_counts(const char *record, uint32_t *hot_node, uint32_t counts[2])
{
	struct expert_store_opts o = { 0 };
	struct expert_store *s = NULL;
	struct topology t;
	struct diag d = { { 0 } };
	struct expert_map *m;
	const struct placement *p;

	test_topo_make(&t, 2);
	o.dir = shm_dir;
	o.name = "rec";
	o.topo = &t;
	o.policy = PLACEMENT_BALANCED;
	o.load_record = record;
	ASSERT_OK(expert_store_open(model_path, &o, &s, &d));
	m = expert_store_map_get(s);
	p = expert_map_placement(m);
	counts[0] = counts[1] = 0;
	for (uint32_t e = 0; e < p->layers[0].n_experts; e++)
		counts[p->layers[0].experts[e].node[0]]++;
	*hot_node = p->layers[0].experts[0].node[0];
	expert_map_put(m);
	expert_store_close(s);
}

static void test_balanced_weighs_recorded_load(void **state)
{
	struct synth_opts so;
	struct diag d = { { 0 } };
	uint32_t counts[2], hot;

	(void)state;
	snprintf(model_path, sizeof(model_path), "%s/model.safetensors", dir);
	synth_opts_init(&so);
	so.output = model_path;
	so.d_model = 16;
	so.d_ff = 32;
	so.n_experts = 4;
	so.n_layers = 1;
	ASSERT_OK(synth_model_write(&so, &d));

	balanced_counts(NULL, &hot, counts);
	ASSERT_EQ(counts[0], 2);
	ASSERT_EQ(counts[1], 2);

	write_text("{\"version\": 1, \"layers\": [[900, 10, 10, 10]]}");
	balanced_counts(path, &hot, counts);
	ASSERT_EQ(counts[hot], 1); /* the hot expert alone on its node */
	ASSERT_EQ(counts[1 - hot], 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_mismatch_refused),
		cmocka_unit_test(test_balanced_weighs_recorded_load),
	};
	int r;

	if (!mkdtemp(dir) || !mkdtemp(shm_dir))
		return 1;
	snprintf(path, sizeof(path), "%s/load.json", dir);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	unlink(path);
	unlink(model_path);
	rmdir(dir);
	rmdir(shm_dir);
	return r;
}
