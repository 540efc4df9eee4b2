/* SPDX-License-Identifier: MIT */
/*
 * test_golden: every case in the golden folder (argv[1], default
 * ../shared/golden/cases) through the C engine, compared with the case's
 * expected results under the tolerances of ../shared/golden/README.md, the
 * way check.py compares a result file. The list of cases is read at run time,
 * so a case dropped into the folder is tested without a code change.
 *
 * Each case also runs on a 1-worker and a 3-worker engine, whose outputs must
 * be bitwise identical: the combine order is fixed, not the thread count's.
 */
#include "test_assert.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "model/model.h"
#include "model/safetensors.h"

static const char *cases_dir = "../shared/golden/cases";
static struct engine *engine_1, *engine_3;

struct slot {
	int32_t expert;
	float weight;
};

static int slot_compare(const void *a, const void *b)
{
	const struct slot *x = a, *y = b;

	return (x->expert > y->expert) - (x->expert < y->expert);
}

/* The sorted non-dropped slots of token t; returns their count. */
static uint32_t token_slots(const int32_t *idx, const float *w, uint32_t k, uint32_t t,
			    struct slot *out)
{
	uint32_t n = 0;

	for (uint32_t j = 0; j < k; j++)
		if (idx[t * k + j] >= 0)
			out[n++] = (struct slot){ idx[t * k + j], w[t * k + j] };
	qsort(out, n, sizeof(*out), slot_compare);
	return n;
}

static void *expected(const struct st_set *set, const char *name, bool ints, uint64_t n)
{
	const struct st_tensor *t = st_set_find(set, name);
	void *buf;

	if (!t)
		fail_msg("case has no tensor %s", name);
	if (t->n_elements != n)
		fail_msg("tensor %s has %llu elements, expected %llu", name,
			 (unsigned long long)t->n_elements, (unsigned long long)n);
	buf = malloc(n * 4 + 4);
	assert_non_null(buf);
	if (ints)
		ASSERT_OK(st_tensor_to_i32(t, buf, NULL));
	else
		ASSERT_OK(st_tensor_to_f32(t, buf, NULL));
	return buf;
}

static void run_case(void **state)
{
	const char *path = *state;
	struct diag d = { { 0 } };
	struct moe_model *model = NULL;
	const struct moe_layer *L;
	const struct st_set *set;
	struct engine_batch b = { 0 }, b3;
	uint32_t T, k, E, dm, bad_routes = 0;
	float *x, *exp_y, *exp_w, *exp_aux, *y3;
	int32_t *exp_idx, *exp_tpe;
	bool balanced;
	int r;

	r = moe_model_open(path, NULL, 0, &model, &d);
	if (r < 0)
		fail_msg("%s", d.msg);
	L = moe_model_layer(model, 0);
	assert_non_null(L);
	set = moe_model_tensors(model);
	dm = L->d_model;
	E = L->n_experts;
	k = router_config_slots(&L->router);
	T = (uint32_t)st_set_find(set, "input")->shape[0];
	balanced = L->router.kind == ROUTER_BASE && L->router.base_mode == BASE_BALANCED;

	x = expected(set, "input", false, (uint64_t)T * dm);
	exp_y = expected(set, "expected.output", false, (uint64_t)T * dm);
	exp_idx = expected(set, "expected.expert_index", true, (uint64_t)T * k);
	exp_w = expected(set, "expected.expert_weight", false, (uint64_t)T * k);
	exp_tpe = expected(set, "expected.tokens_per_expert", true, E);
	exp_aux = expected(set, "expected.aux_loss", false, 1);

	b.x = x;
	b.n_tokens = T;
	b.output = calloc((size_t)T * dm, sizeof(float));
	b.expert_index = calloc((size_t)T * k, sizeof(int32_t));
	b.expert_weight = calloc((size_t)T * k, sizeof(float));
	b.tokens_per_expert = calloc(E, sizeof(int32_t));
	y3 = calloc((size_t)T * dm, sizeof(float));
	assert_true(b.output && b.expert_index && b.expert_weight && b.tokens_per_expert && y3);
	r = engine_forward(engine_1, L, NULL, &b, &d);
	if (r < 0)
		fail_msg("engine_forward: %s (%s)", d.msg, strerror(-r));

	/* routing, token by token; slots may come in any order */
	bool *route_ok = calloc(T, sizeof(bool));
	assert_non_null(route_ok);
	for (uint32_t t = 0; t < T; t++) {
		struct slot a[64], g[64];
		uint32_t na = token_slots(exp_idx, exp_w, k, t, a);
		uint32_t ng = token_slots(b.expert_index, b.expert_weight, k, t, g);
		bool ok = na == ng;

		for (uint32_t j = 0; ok && j < na; j++)
			ok = a[j].expert == g[j].expert &&
			     fabs((double)a[j].weight - g[j].weight) <= 1e-5 + 1e-4 * fabs(a[j].weight);
		route_ok[t] = ok;
		if (!ok) {
			bad_routes++;
			if (!balanced)
				fail_msg("token %u: routing differs (first expected expert %d w %g, "
					 "got %d w %g)",
					 t, na ? a[0].expert : -1, na ? a[0].weight : 0,
					 ng ? g[0].expert : -1, ng ? g[0].weight : 0);
		}
	}
	if (balanced) {
		/* any optimal balanced assignment is right */
		const struct st_tensor *c = st_set_find(set, "layers.0.router.centroids");
		float *cent = expected(set, "layers.0.router.centroids", false, (uint64_t)E * dm);
		float *best = expected(set, "expected.assignment_score", false, 1);
		double score = 0;

		assert_non_null(c);
		for (uint32_t e = 0; e < E; e++)
			ASSERT_EQ(b.tokens_per_expert[e], T / E);
		for (uint32_t t = 0; t < T; t++) {
			int32_t e = b.expert_index[t * k];

			assert_true(e >= 0 && (uint32_t)e < E);
			for (uint32_t i = 0; i < dm; i++)
				score += (double)x[t * dm + i] * cent[(size_t)e * dm + i];
		}
		if (score < best[0] - 1e-3 * fabs(best[0]))
			fail_msg("balanced assignment scores %.6f, optimum %.6f", score, best[0]);
		free(cent);
		free(best);
	} else {
		for (uint32_t e = 0; e < E; e++)
			if (b.tokens_per_expert[e] != exp_tpe[e])
				fail_msg("tokens_per_expert[%u] = %d, expected %d", e,
					 b.tokens_per_expert[e], exp_tpe[e]);
	}
	for (uint32_t t = 0; t < T; t++) {
		if (!route_ok[t])
			continue;
		for (uint32_t i = 0; i < dm; i++) {
			double e = exp_y[t * dm + i], g = b.output[t * dm + i];

			if (!(fabs(e - g) <= 1e-4 + 1e-3 * fabs(e)))
				fail_msg("output differs at token %u column %u: expected %.6g, got "
					 "%.6g",
					 t, i, e, g);
		}
	}
	ASSERT_CLOSE(b.aux_loss, exp_aux[0], 1e-5, 1e-4);
	if (st_set_find(set, "expected.z_loss")) {
		float *z = expected(set, "expected.z_loss", false, 1);

		assert_true(b.has_z_loss);
		ASSERT_CLOSE(b.z_loss, z[0], 1e-5, 1e-4);
		free(z);
	}

	/* the same batch on 3 workers: bitwise the same output */
	b3 = b;
	b3.output = y3;
	b3.expert_index = NULL;
	b3.expert_weight = NULL;
	b3.tokens_per_expert = NULL;
	ASSERT_OK(engine_forward(engine_3, L, NULL, &b3, &d));
	if (memcmp(y3, b.output, sizeof(float) * T * dm) != 0)
		fail_msg("the output on 3 workers differs from the output on 1 worker");

	free(route_ok);
	free(y3);
	free(b.output);
	free(b.expert_index);
	free(b.expert_weight);
	free(b.tokens_per_expert);
	free(x);
	free(exp_y);
	free(exp_idx);
	free(exp_w);
	free(exp_tpe);
	free(exp_aux);
	moe_model_free(model);
}

static int name_compare(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
	struct engine_opts o;
	struct CMUnitTest *tests;
	struct dirent *de;
	char **paths = NULL;
	size_t n = 0;
	DIR *dir;
	int failed;

	if (argc > 1)
		cases_dir = argv[1];
	dir = opendir(cases_dir);
	if (!dir) {
		printf("skip: no golden cases at %s: %s\n", cases_dir, strerror(errno));
		return 77;
	}
	while ((de = readdir(dir))) {
		size_t len = strlen(de->d_name);
		char **grown;

		if (len < 12 || strcmp(de->d_name + len - 12, ".safetensors") != 0)
			continue;
		grown = realloc(paths, (n + 1) * sizeof(*paths));
		if (!grown)
			return 1;
		paths = grown;
		if (asprintf(&paths[n], "%s/%s", cases_dir, de->d_name) < 0)
			return 1;
		n++;
	}
	closedir(dir);
	if (n == 0) {
		printf("skip: no *.safetensors in %s\n", cases_dir);
		return 77;
	}
	qsort(paths, n, sizeof(*paths), name_compare);

	engine_opts_init(&o);
	o.n_workers = 1;
	if (engine_new(&o, &engine_1, NULL) < 0)
		return 1;
	o.n_workers = 3;
	if (engine_new(&o, &engine_3, NULL) < 0)
		return 1;
	tests = calloc(n, sizeof(*tests));
	if (!tests)
		return 1;
	for (size_t i = 0; i < n; i++)
		tests[i] = (struct CMUnitTest){ .name = strrchr(paths[i], '/') + 1,
						.test_func = run_case,
						.initial_state = paths[i] };
	failed = _cmocka_run_group_tests("golden", tests, n, NULL, NULL);
	engine_free(engine_1);
	engine_free(engine_3);
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	free(tests);
	return failed ? 1 : 0;
}
