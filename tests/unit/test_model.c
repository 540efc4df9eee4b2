/* SPDX-License-Identifier: MIT */
/*
 * Tests of model loading: synthetic checkpoints written by synth_model_write
 * into a temporary folder in every layout (moed, Mixtral, Qwen2-MoE and
 * DeepSeek with their shared experts), every weight dtype (F32, BF16, F16),
 * one file or shards with an index, reopened with moe_model_open: shapes,
 * router settings from the metadata, from a config.json and from overrides,
 * each weight wired to the tensor of its name, the BF16/F16 conversion within
 * half an ulp, and the engine's output on models of different layouts and
 * dtypes. Then hand-written checkpoints (st_writer) with one defect each:
 * a wrong or transposed w2, a missing tensor, experts of different widths,
 * metadata that disagrees with the tensors, two layouts in one file.
 */
#include "test_assert.h"

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "model/model.h"
#include "model/model_names.h"
#include "model/safetensors.h"
#include "model/synth_model.h"

/* ---------------------------------------------------------------- helpers */

static char *tmp_root;
static struct engine *engine;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static char *path_in(const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", tmp_root, name) < 0)
		fail_msg("asprintf: out of memory");
	return p;
}

/* Small models: d 16, ff 24, 4 experts, 2 layers, 5 input tokens. */
static void synth_defaults(struct synth_opts *o, const char *path)
{
	synth_opts_init(o);
	o->output = path;
	o->d_model = 16;
	o->d_ff = 24;
	o->n_experts = 4;
	o->n_layers = 2;
	o->tokens = 5;
	o->seed = 7;
}

/* @path holds exactly @text afterwards. */
static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

static void synth_set(struct synth_opts *o, const char *setting)
{
	assert_true(o->n_settings < SYNTH_MAX_SETTINGS);
	o->settings[o->n_settings++] = setting;
}

static void synth_write_ok(const struct synth_opts *o)
{
	struct diag d = { { 0 } };
	int r = synth_model_write(o, &d);

	if (r < 0)
		fail_msg("synth_model_write %s: %s (%s)", o->output, d.msg, strerror(-r));
}

static struct moe_model *open_ok(const char *path, const char *const *ov, unsigned n_ov)
{
	struct moe_model *m = NULL;
	struct diag d = { { 0 } };
	int r = moe_model_open(path, ov, n_ov, &m, &d);

	if (r < 0)
		fail_msg("moe_model_open %s: %s (%s)", path, d.msg, strerror(-r));
	assert_non_null(m);
	return m;
}

/* Open must fail with -@err and a diag holding @needle; *ret_model untouched. */
static void open_refused(const char *path, const char *const *ov, unsigned n_ov, int err,
			 const char *needle)
{
	struct moe_model *m = (struct moe_model *)(uintptr_t)0x1;
	struct diag d = { { 0 } };

	ASSERT_ERRNO(moe_model_open(path, ov, n_ov, &m, &d), err);
	assert_true(m == (struct moe_model *)(uintptr_t)0x1);
	if (needle && !strstr(d.msg, needle))
		fail_msg("diag '%s' does not mention '%s'", d.msg, needle);
}

/* The float32 values of tensor @name of @m's tensor set (malloc'd). */
static float *tensor_f32(const struct moe_model *m, const char *name, uint64_t n)
{
	const struct st_tensor *t = st_set_find(moe_model_tensors(m), name);
	float *buf;

	if (!t)
		fail_msg("no tensor %s", name);
	assert_int_equal(t->n_elements, n);
	buf = malloc(sizeof(float) * n);
	assert_non_null(buf);
	ASSERT_OK(st_tensor_to_f32(t, buf, NULL));
	return buf;
}

/* @got (a layer's weight) holds exactly the values of tensor @role in the file. */
static void expect_wired(const struct moe_model *m, enum model_layout layout,
			 enum tensor_role role, uint32_t layer, uint32_t expert, const float *got,
			 uint64_t n)
{
	char name[256];
	float *want;

	assert_non_null(got);
	ASSERT_OK(model_tensor_name(layout, role, layer, expert, 0, name, sizeof(name)));
	want = tensor_f32(m, name, n);
	if (memcmp(got, want, sizeof(float) * n) != 0)
		fail_msg("the layer's weight is not tensor %s", name);
	free(want);
}

/* Run layer @l of @m on its "input" batch; returns the output (malloc'd). */
static float *forward_input(const struct moe_model *m, uint32_t l, int32_t *ret_index)
{
	const struct moe_layer *L = moe_model_layer(m, l);
	const struct st_tensor *t = st_set_find(moe_model_tensors(m), "input");
	struct engine_batch b = { 0 };
	struct diag d = { { 0 } };
	float *x;
	int r;

	assert_non_null(L);
	assert_non_null(t);
	assert_int_equal(t->shape[1], L->d_model);
	x = tensor_f32(m, "input", t->n_elements);
	b.x = x;
	b.n_tokens = (uint32_t)t->shape[0];
	b.output = malloc(sizeof(float) * t->n_elements);
	b.expert_index = ret_index;
	assert_non_null(b.output);
	r = engine_forward(engine, L, NULL, &b, &d);
	if (r < 0)
		fail_msg("engine_forward: %s (%s)", d.msg, strerror(-r));
	for (uint64_t i = 0; i < t->n_elements; i++)
		assert_true(isfinite(b.output[i]));
	free(x);
	return b.output;
}

/* ------------------------------------------------------- synthetic models */

static void test_moed_f32(void **state)
{
	char *path = path_in("moed_f32.safetensors");
	struct synth_opts o;
	struct moe_model *m;

	(void)state;
	synth_defaults(&o, path);
	o.bias = 1;
	synth_set(&o, "router=topk");
	synth_set(&o, "top_k=2");
	synth_set(&o, "normalize=true");
	synth_set(&o, "capacity_factor=1.5");
	synth_set(&o, "min_capacity=2");
	synth_set(&o, "drop=passthrough");
	synth_set(&o, "activation=relu");
	synth_write_ok(&o);

	m = open_ok(path, NULL, 0);
	assert_string_equal(moe_model_layout(m), "moed");
	assert_int_equal(moe_model_n_layers(m), 2);
	assert_null(moe_model_layer(m, 2));
	for (uint32_t l = 0; l < 2; l++) {
		const struct moe_layer *L = moe_model_layer(m, l);

		assert_non_null(L);
		assert_int_equal(L->index, l);
		assert_int_equal(L->d_model, 16);
		assert_int_equal(L->d_ff, 24);
		assert_int_equal(L->n_experts, 4);
		assert_int_equal(L->router.kind, ROUTER_TOPK);
		assert_int_equal(L->router.top_k, 2);
		assert_true(L->router.normalize);
		assert_true(L->router.capacity_factor == 1.5);
		assert_int_equal(L->router.min_capacity, 2);
		assert_int_equal(L->router.drop, DROP_PASSTHROUGH);
		assert_int_equal(L->router.activation, ACT_RELU);
		assert_false(L->has_shared);
		assert_null(L->centroids);
		/* every weight is the tensor of its name, in its layer */
		expect_wired(m, LAYOUT_MOED, ROLE_ROUTER_W, l, 0, L->router_w, 4 * 16);
		expect_wired(m, LAYOUT_MOED, ROLE_ROUTER_B, l, 0, L->router_b, 4);
		for (uint32_t e = 0; e < 4; e++) {
			const struct ffn_weights *f = &L->experts[e].ffn;

			assert_int_equal(f->d_ff, 24);
			assert_null(f->w3);
			expect_wired(m, LAYOUT_MOED, ROLE_EXPERT_W1, l, e, f->w1, 24 * 16);
			expect_wired(m, LAYOUT_MOED, ROLE_EXPERT_W2, l, e, f->w2, 16 * 24);
			expect_wired(m, LAYOUT_MOED, ROLE_EXPERT_B1, l, e, f->b1, 24);
			expect_wired(m, LAYOUT_MOED, ROLE_EXPERT_B2, l, e, f->b2, 16);
		}
	}
	/* the two layers are different weights */
	assert_true(memcmp(moe_model_layer(m, 0)->router_w, moe_model_layer(m, 1)->router_w,
			   sizeof(float) * 64) != 0);
	free(forward_input(m, 0, NULL));
	free(forward_input(m, 1, NULL));
	moe_model_free(m);
	free(path);
}

static void test_settings_from_metadata(void **state)
{
	char *path = path_in("gshard.safetensors");
	struct synth_opts o;
	struct moe_model *m;
	const struct moe_layer *L;

	(void)state;
	synth_defaults(&o, path);
	o.n_layers = 1;
	synth_set(&o, "router=gshard");
	synth_set(&o, "top2_variant=fairscale");
	synth_set(&o, "capacity_factor=1.25");
	synth_set(&o, "min_capacity=3");
	synth_set(&o, "scale=input");
	synth_set(&o, "seed=42");
	synth_set(&o, "priority=score");
	synth_set(&o, "nonfinite=sanitize");
	synth_set(&o, "activation=gelu");
	synth_write_ok(&o);

	m = open_ok(path, NULL, 0);
	L = moe_model_layer(m, 0);
	assert_non_null(L);
	assert_int_equal(L->router.kind, ROUTER_GSHARD);
	assert_int_equal(L->router.top2_variant, TOP2_FAIRSCALE);
	assert_true(L->router.capacity_factor == 1.25);
	assert_int_equal(L->router.min_capacity, 3);
	assert_int_equal(L->router.scale, SCALE_INPUT);
	assert_true(L->router.seed == 42);
	assert_int_equal(L->router.priority, PRIORITY_SCORE);
	assert_int_equal(L->router.nonfinite, NONFINITE_SANITIZE);
	assert_int_equal(L->router.activation, ACT_GELU);
	assert_int_equal(router_config_slots(&L->router), 2);
	assert_string_equal(st_set_metadata(moe_model_tensors(m), "moed.router"), "gshard");
	free(forward_input(m, 0, NULL));
	moe_model_free(m);
	free(path);
}

static void test_overrides(void **state)
{
	static const char *const one[] = { "top_k=1" };
	static const char *const several[] = { "capacity_factor=2", "drop=passthrough",
					       "top_k=1", "top_k=3", "normalize=false" };
	char *path = path_in("overrides.safetensors");
	struct synth_opts o;
	struct moe_model *m;
	const struct moe_layer *L;

	(void)state;
	synth_defaults(&o, path);
	synth_set(&o, "top_k=2");
	synth_set(&o, "normalize=true");
	synth_write_ok(&o);

	m = open_ok(path, one, 1);
	for (uint32_t l = 0; l < 2; l++) {
		L = moe_model_layer(m, l);
		assert_int_equal(L->router.top_k, 1);
		assert_true(L->router.normalize); /* the rest from the metadata */
	}
	moe_model_free(m);

	m = open_ok(path, several, 5);
	L = moe_model_layer(m, 1);
	assert_int_equal(L->router.top_k, 3); /* in order: the last one wins */
	assert_true(L->router.capacity_factor == 2.0);
	assert_int_equal(L->router.drop, DROP_PASSTHROUGH);
	assert_false(L->router.normalize);
	moe_model_free(m);
	free(path);
}

static void test_bad_overrides(void **state)
{
	char *path = path_in("bad_overrides.safetensors");
	struct synth_opts o;

	(void)state;
	synth_defaults(&o, path);
	synth_set(&o, "top_k=2");
	synth_write_ok(&o);

	open_refused(path, (const char *const[]){ "top_k=zero" }, 1, EINVAL, "top_k");
	open_refused(path, (const char *const[]){ "top_k=0" }, 1, EINVAL, "top_k");
	open_refused(path, (const char *const[]){ "bogus_option=1" }, 1, EINVAL, "bogus_option");
	open_refused(path, (const char *const[]){ "top_k" }, 1, EINVAL, "key=value");
	open_refused(path, (const char *const[]){ "=2" }, 1, EINVAL, NULL);
	/* valid syntax, but more experts per token than the layer has */
	open_refused(path, (const char *const[]){ "top_k=9" }, 1, EINVAL, "top_k 9");
	/* a gated activation needs w3, which this relu model lacks */
	open_refused(path, (const char *const[]){ "activation=silu_gated" }, 1, EINVAL, ".w3");
	/* a good override then a bad one: still refused */
	open_refused(path, (const char *const[]){ "top_k=1", "router=nope" }, 2, EINVAL,
		     "router");
	free(path);
}

static void test_layouts(void **state)
{
	static const enum model_layout layouts[] = { LAYOUT_MOED, LAYOUT_MIXTRAL, LAYOUT_QWEN2,
						     LAYOUT_DEEPSEEK };
	static const char *const names[] = { "moed", "mixtral", "qwen2_moe", "deepseek" };
	float *ref_out = NULL;
	int32_t ref_idx[5 * 2], idx[5 * 2];

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		char file[64];
		char *path;
		struct synth_opts o;
		struct moe_model *m;
		const struct moe_layer *L;
		float *out;

		snprintf(file, sizeof(file), "layout_%s.safetensors", names[i]);
		path = path_in(file);
		synth_defaults(&o, path);
		o.layout = layouts[i];
		synth_set(&o, "activation=silu_gated");
		synth_set(&o, "top_k=2");
		synth_set(&o, "normalize=true");
		synth_write_ok(&o);

		m = open_ok(path, NULL, 0);
		/*
		 * DeepSeek without shared experts has exactly Qwen2-MoE's names:
		 * only a shared expert tells the two apart.
		 */
		assert_string_equal(moe_model_layout(m), layouts[i] == LAYOUT_DEEPSEEK
								 ? "qwen2_moe"
								 : names[i]);
		assert_int_equal(moe_model_n_layers(m), 2);
		L = moe_model_layer(m, 1);
		assert_non_null(L);
		assert_int_equal(L->n_experts, 4);
		assert_int_equal(L->d_model, 16);
		assert_int_equal(L->d_ff, 24);
		assert_int_equal(L->router.kind, ROUTER_TOPK);
		assert_int_equal(L->router.activation, ACT_SILU_GATED);
		assert_null(L->router_b);
		assert_false(L->has_shared);
		for (uint32_t e = 0; e < 4; e++) {
			assert_non_null(L->experts[e].ffn.w3);
			expect_wired(m, layouts[i], ROLE_EXPERT_W3, 1, e, L->experts[e].ffn.w3,
				     24 * 16);
			expect_wired(m, layouts[i], ROLE_EXPERT_W2, 1, e, L->experts[e].ffn.w2,
				     16 * 24);
		}
		/*
		 * Without biases or a shared expert the four layouts draw the same
		 * values in the same order: the same layer under four names, so
		 * the same output, bit for bit.
		 */
		out = forward_input(m, 0, idx);
		if (!ref_out) {
			ref_out = out;
			memcpy(ref_idx, idx, sizeof(idx));
		} else {
			assert_memory_equal(idx, ref_idx, sizeof(idx));
			assert_memory_equal(out, ref_out, sizeof(float) * 5 * 16);
			free(out);
		}
		moe_model_free(m);
		free(path);
	}
	free(ref_out);
}

/*
 * Layout defaults when the metadata says nothing: Mixtral renormalises its
 * top-2, Qwen2-MoE does not; a config.json beside the weights overrides
 * them, the metadata overrides that, the caller's options override all.
 */
static void test_layout_defaults_and_config_json(void **state)
{
	char *dir = path_in("mixtral_sharded"), *cfg, *index;
	struct synth_opts o;
	struct moe_model *m;

	(void)state;
	synth_defaults(&o, dir);
	o.layout = LAYOUT_MIXTRAL;
	o.shards = 2;
	synth_set(&o, "activation=silu_gated");
	synth_write_ok(&o);

	m = open_ok(dir, NULL, 0);
	assert_string_equal(moe_model_layout(m), "mixtral");
	assert_int_equal(moe_model_layer(m, 0)->router.top_k, 2);
	assert_true(moe_model_layer(m, 0)->router.normalize);
	moe_model_free(m);

	if (asprintf(&cfg, "%s/config.json", dir) < 0)
		fail_msg("asprintf");
	write_text(cfg, "{\"num_experts_per_tok\": 3, \"norm_topk_prob\": false, "
		        "\"hidden_act\": \"gelu\"}\n");
	m = open_ok(dir, NULL, 0);
	assert_int_equal(moe_model_layer(m, 1)->router.top_k, 3);
	assert_false(moe_model_layer(m, 1)->router.normalize);
	/* the metadata's activation=silu_gated wins over config.json's gelu */
	assert_int_equal(moe_model_layer(m, 1)->router.activation, ACT_SILU_GATED);
	moe_model_free(m);
	m = open_ok(dir, (const char *const[]){ "top_k=1" }, 1);
	assert_int_equal(moe_model_layer(m, 1)->router.top_k, 1);
	moe_model_free(m);

	/* the index file itself opens the same checkpoint */
	if (asprintf(&index, "%s/model.safetensors.index.json", dir) < 0)
		fail_msg("asprintf");
	m = open_ok(index, NULL, 0);
	assert_int_equal(moe_model_layer(m, 0)->router.top_k, 3);
	moe_model_free(m);

	/* a broken config.json is an error, not silently ignored */
	write_text(cfg, "{\"num_experts_per_tok\": ");
	open_refused(dir, NULL, 0, EINVAL, "config.json");
	free(index);
	free(cfg);
	free(dir);
}

/* DeepSeek's config.json: sigmoid scores, group-limited top-k, routed scaling. */
static void test_deepseek_config_json(void **state)
{
	char *dir = path_in("deepseek_cfg"), *file = NULL, *cfg = NULL;
	const struct moe_layer *L;
	struct synth_opts o;
	struct moe_model *m;

	(void)state;
	assert_int_equal(mkdir(dir, 0755), 0);
	if (asprintf(&file, "%s/model.safetensors", dir) < 0 ||
	    asprintf(&cfg, "%s/config.json", dir) < 0)
		fail_msg("asprintf");
	synth_defaults(&o, file);
	o.layout = LAYOUT_DEEPSEEK;
	o.shared_d_ff = 8;
	synth_set(&o, "activation=silu_gated");
	synth_write_ok(&o);
	write_text(cfg, "{\"num_experts_per_tok\": 2, \"norm_topk_prob\": true, \"scoring_func\": "
		        "\"sigmoid\", \"topk_method\": \"noaux_tc\", \"n_group\": 2, \"topk_group\": 1, "
		        "\"routed_scaling_factor\": 2.5}\n");

	m = open_ok(dir, NULL, 0);
	assert_string_equal(moe_model_layout(m), "deepseek");
	L = moe_model_layer(m, 0);
	assert_int_equal(L->router.score, SCORE_SIGMOID);
	assert_true(L->router.normalize);
	assert_int_equal(L->router.expert_groups, 2);
	assert_int_equal(L->router.topk_groups, 1);
	assert_int_equal(L->router.group_score, GROUP_SCORE_TOP2);
	ASSERT_CLOSE(L->router.routed_scaling, 2.5, 0, 0);
	assert_true(L->has_shared);
	moe_model_free(m);

	/* V2's group_limited_greedy scores a group by its best expert */
	write_text(cfg, "{\"topk_method\": \"group_limited_greedy\", \"n_group\": 2, "
		        "\"topk_group\": 1}\n");
	m = open_ok(dir, NULL, 0);
	assert_int_equal(moe_model_layer(m, 1)->router.group_score, GROUP_SCORE_MAX);
	moe_model_free(m);

	/* an activation or score moed does not have is refused, not approximated */
	write_text(cfg, "{\"hidden_act\": \"gelu_pytorch_tanh\"}\n");
	open_refused(dir, NULL, 0, EINVAL, "hidden_act");
	write_text(cfg, "{\"scoring_func\": \"softplus\"}\n");
	open_refused(dir, NULL, 0, EINVAL, "scoring_func");

	/*
	 * DeepSeek-V3 as transformers saves it (only what differs from
	 * DeepseekV3Config): no scoring_func, no topk_method. Its router is
	 * sigmoid, noaux_tc groups, normalised, scaled by 2.5; the file's
	 * n_group and num_experts_per_tok still apply (this model has 4 experts).
	 */
	write_text(cfg, "{\"model_type\": \"deepseek_v3\", \"n_group\": 2, \"topk_group\": 1, "
		        "\"num_experts_per_tok\": 2}\n");
	m = open_ok(dir, NULL, 0);
	L = moe_model_layer(m, 0);
	assert_int_equal(L->router.score, SCORE_SIGMOID);
	assert_true(L->router.normalize);
	assert_int_equal(L->router.top_k, 2);
	assert_int_equal(L->router.expert_groups, 2);
	assert_int_equal(L->router.topk_groups, 1);
	assert_int_equal(L->router.group_score, GROUP_SCORE_TOP2);
	ASSERT_CLOSE(L->router.routed_scaling, 2.5, 0, 0);
	moe_model_free(m);
	/* and what DeepSeek-V3 never does is refused, not guessed */
	write_text(cfg, "{\"model_type\": \"deepseek_v3\", \"scoring_func\": \"softmax\"}\n");
	open_refused(dir, NULL, 0, EINVAL, "deepseek_v3 with scoring_func 'softmax'");
	write_text(cfg, "{\"model_type\": \"deepseek_v3\", \"topk_method\": \"greedy\"}\n");
	open_refused(dir, NULL, 0, EINVAL, "deepseek_v3 with topk_method 'greedy'");
	free(cfg);
	free(file);
	free(dir);
}

static void test_shared_experts(void **state)
{
	char *qpath = path_in("qwen2_shared.safetensors"), *dpath = path_in("deepseek_shared");
	struct synth_opts o;
	struct moe_model *m;
	const struct moe_layer *L;

	(void)state;
	/* Qwen2-MoE: one shared expert of its own width, with a sigmoid gate */
	synth_defaults(&o, qpath);
	o.layout = LAYOUT_QWEN2;
	o.shared_d_ff = 40;
	synth_set(&o, "activation=silu_gated");
	synth_write_ok(&o);
	m = open_ok(qpath, NULL, 0);
	assert_string_equal(moe_model_layout(m), "qwen2_moe");
	L = moe_model_layer(m, 1);
	assert_true(L->has_shared);
	assert_int_equal(L->shared.d_ff, 40);
	assert_int_equal(L->d_ff, 24);
	assert_false(L->router.normalize);
	assert_int_equal(L->router.top_k, 2);
	expect_wired(m, LAYOUT_QWEN2, ROLE_SHARED_W1, 1, 0, L->shared.w1, 40 * 16);
	expect_wired(m, LAYOUT_QWEN2, ROLE_SHARED_W2, 1, 0, L->shared.w2, 16 * 40);
	expect_wired(m, LAYOUT_QWEN2, ROLE_SHARED_W3, 1, 0, L->shared.w3, 40 * 16);
	expect_wired(m, LAYOUT_QWEN2, ROLE_SHARED_GATE, 1, 0, L->shared_gate, 16);
	free(forward_input(m, 1, NULL));
	moe_model_free(m);

	/* DeepSeek: shared experts in the plural, no gate; sharded this time */
	synth_defaults(&o, dpath);
	o.layout = LAYOUT_DEEPSEEK;
	o.shared_d_ff = 48;
	o.shards = 2;
	synth_set(&o, "activation=silu_gated");
	synth_set(&o, "score=sigmoid");
	synth_set(&o, "normalize=true");
	synth_write_ok(&o);
	m = open_ok(dpath, NULL, 0);
	assert_string_equal(moe_model_layout(m), "deepseek");
	for (uint32_t l = 0; l < 2; l++) {
		L = moe_model_layer(m, l);
		assert_true(L->has_shared);
		assert_int_equal(L->shared.d_ff, 48);
		assert_null(L->shared_gate);
		assert_int_equal(L->router.score, SCORE_SIGMOID);
		expect_wired(m, LAYOUT_DEEPSEEK, ROLE_SHARED_W2, l, 0, L->shared.w2, 16 * 48);
	}
	assert_int_equal(st_set_file_count(moe_model_tensors(m)), 2);
	free(forward_input(m, 0, NULL));
	moe_model_free(m);
	free(qpath);
	free(dpath);
}

/* A sharded checkpoint is the single-file one cut in two: the same output. */
static void test_sharded_equals_single(void **state)
{
	char *single = path_in("single.safetensors"), *dir = path_in("sharded"), *index;
	struct synth_opts o;
	struct moe_model *ms, *mh;
	struct stat st;

	(void)state;
	synth_defaults(&o, single);
	o.bias = 1;
	synth_set(&o, "top_k=2");
	synth_write_ok(&o);
	o.output = dir;
	o.shards = 2;
	synth_write_ok(&o);
	if (asprintf(&index, "%s/model.safetensors.index.json", dir) < 0)
		fail_msg("asprintf");
	assert_int_equal(stat(index, &st), 0);

	ms = open_ok(single, NULL, 0);
	mh = open_ok(dir, NULL, 0);
	assert_int_equal(st_set_file_count(moe_model_tensors(mh)), 2);
	assert_int_equal(moe_model_n_layers(mh), 2);
	for (uint32_t l = 0; l < 2; l++) {
		float *a = forward_input(ms, l, NULL), *b = forward_input(mh, l, NULL);

		assert_memory_equal(a, b, sizeof(float) * 5 * 16);
		assert_int_equal(moe_model_layer(mh, l)->router.top_k, 2);
		free(a);
		free(b);
	}
	moe_model_free(ms);
	moe_model_free(mh);
	free(index);
	free(single);
	free(dir);
}

/* Every a[i] within ulp_rel * |ref[i]| + floor_abs of ref[i]. */
static void expect_rounded(const float *a, const float *ref, uint64_t n, double ulp_rel,
			   double floor_abs)
{

	for (uint64_t i = 0; i < n; i++) {
		double diff = fabs((double)a[i] - ref[i]);

		if (diff > ulp_rel * fabs(ref[i]) + floor_abs)
			fail_msg("element %llu: %.9g vs f32 %.9g (diff %.3g > %.3g)",
				 (unsigned long long)i, a[i], ref[i], diff,
				 ulp_rel * fabs(ref[i]) + floor_abs);
	}
}

/* expect_rounded() for @n elements of @f's matrix @w (in @f's dtype). */
static void expect_rounded_ffn(const struct ffn_weights *f, const void *w, const void *ref,
			       uint64_t n, double ulp_rel, double floor_abs)
{
	float *wide = malloc(sizeof(float) * n);

	assert_non_null(wide);
	for (uint64_t i = 0; i < n; i++)
		wide[i] = ffn_weight_at(f, w, i);
	expect_rounded(wide, ref, n, ulp_rel, floor_abs);
	free(wide);
}

/*
 * BF16 and F16 checkpoints made with the same seed hold the F32 values
 * rounded to nearest: within half an ulp (2^-8 relative for BF16's 8
 * significant bits, 2^-11 for F16's 11, plus F16's subnormal spacing). The
 * outputs then agree with F32's to the rounding's size, F16 closer than BF16.
 */
static void test_dtypes(void **state)
{
	static const enum st_dtype dtypes[] = { ST_F32, ST_BF16, ST_F16 };
	static const char *const files[] = { "f32.safetensors", "bf16.safetensors",
					     "f16.safetensors" };
	struct moe_model *m[3];
	float *out[3];
	int32_t idx[3][5 * 2];
	double out_err[3] = { 0 };

	(void)state;
	for (int i = 0; i < 3; i++) {
		char *path = path_in(files[i]);
		struct synth_opts o;
		const struct st_tensor *t;

		synth_defaults(&o, path);
		o.dtype = dtypes[i];
		o.layout = LAYOUT_MIXTRAL;
		synth_set(&o, "activation=silu_gated");
		synth_write_ok(&o);
		m[i] = open_ok(path, NULL, 0);
		t = st_set_find(moe_model_tensors(m[i]),
				"model.layers.0.block_sparse_moe.experts.1.w2.weight");
		assert_non_null(t);
		assert_int_equal(t->dtype, dtypes[i]);
		/* the input stays F32 in every dtype */
		assert_int_equal(st_set_find(moe_model_tensors(m[i]), "input")->dtype, ST_F32);
		out[i] = forward_input(m[i], 0, idx[i]);
		free(path);
	}
	for (uint32_t l = 0; l < 2; l++) {
		const struct moe_layer *a = moe_model_layer(m[0], l), *b = moe_model_layer(m[1], l),
				       *h = moe_model_layer(m[2], l);

		expect_rounded(b->router_w, a->router_w, 4 * 16, 0x1p-8, 0);
		expect_rounded(h->router_w, a->router_w, 4 * 16, 0x1p-11, 0x1p-25);
		for (uint32_t e = 0; e < 4; e++) {
			const struct ffn_weights *fa = &a->experts[e].ffn, *fb = &b->experts[e].ffn,
						 *fh = &h->experts[e].ffn;

			/* the experts keep the checkpoint's dtype, in place */
			assert_int_equal(fa->dtype, WEIGHT_F32);
			assert_int_equal(fb->dtype, WEIGHT_BF16);
			assert_int_equal(fh->dtype, WEIGHT_F16);
			expect_rounded_ffn(fb, fb->w1, fa->w1, 24 * 16, 0x1p-8, 0);
			expect_rounded_ffn(fb, fb->w2, fa->w2, 16 * 24, 0x1p-8, 0);
			expect_rounded_ffn(fb, fb->w3, fa->w3, 24 * 16, 0x1p-8, 0);
			expect_rounded_ffn(fh, fh->w1, fa->w1, 24 * 16, 0x1p-11, 0x1p-25);
			expect_rounded_ffn(fh, fh->w2, fa->w2, 16 * 24, 0x1p-11, 0x1p-25);
			expect_rounded_ffn(fh, fh->w3, fa->w3, 24 * 16, 0x1p-11, 0x1p-25);
		}
	}
	/* outputs: compare the tokens whose routing the rounding did not flip */
	for (int i = 1; i < 3; i++) {
		uint32_t same = 0;

		for (uint32_t t = 0; t < 5; t++) {
			if (memcmp(idx[i] + 2 * t, idx[0] + 2 * t, sizeof(int32_t) * 2) != 0)
				continue;
			same++;
			for (uint32_t c = 0; c < 16; c++) {
				double g = out[i][t * 16 + c], r = out[0][t * 16 + c];

				ASSERT_CLOSE(g, r, 0.02, 0.02);
				out_err[i] = fmax(out_err[i], fabs(g - r));
			}
		}
		assert_true(same >= 4);
	}
	/* BF16 did change the numbers, and F16 rounds finer than BF16 */
	assert_true(out_err[1] > 0);
	assert_true(out_err[2] < out_err[1]);
	for (int i = 0; i < 3; i++) {
		free(out[i]);
		moe_model_free(m[i]);
	}
}

/* ------------------------------------------------ hand-written checkpoints */

enum defect {
	DEFECT_NONE,
	DEFECT_W2_SHAPE,      /* expert 1's w2 is [d][ff + 1] */
	DEFECT_W2_TRANSPOSED, /* expert 1's w2 is [ff][d] */
	DEFECT_W2_MISSING,    /* expert 1 has no w2 */
	DEFECT_W1_MISSING,    /* expert 1 has no w1 (expert 2 has): the router has 3 rows */
	DEFECT_DFF_MISMATCH,  /* expert 2 is wider than the others */
	DEFECT_META_EXPERTS,  /* moed.n_experts = 4 */
	DEFECT_META_EXPERTS_NAN, /* moed.n_experts = three */
	DEFECT_META_DMODEL,   /* moed.d_model = 5 */
	DEFECT_META_DFF,      /* moed.d_ff = 7 */
	DEFECT_META_SETTING,  /* moed.top_k = many */
	DEFECT_TWO_LAYOUTS,   /* a Mixtral router tensor as well */
	DEFECT_NO_EXPERTS,    /* a router and nothing else */
	DEFECT_NO_ROUTER,     /* experts without a router */
	DEFECT_ROUTER_1D,     /* the router is a vector */
};

enum { HD = 4, HFF = 6, HE = 3 };

/* A moed-layout checkpoint of one layer, 3 experts, d 4, ff 6, with @defect. */
static char *hand_model(const char *file, enum defect defect)
{
	static float data[64 * 64];
	char *path = path_in(file);
	struct st_writer *w;
	struct diag d = { { 0 } };
	char name[128];
	int r;

	for (size_t i = 0; i < sizeof(data) / sizeof(data[0]); i++)
		data[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
	ASSERT_OK(st_writer_new(&w));
	if (defect != DEFECT_NO_ROUTER) {
		uint64_t rshape[2] = { HE, HD };

		if (defect == DEFECT_ROUTER_1D)
			ASSERT_OK(st_writer_add(w, "layers.0.router.weight", ST_F32, 1,
						(uint64_t[]){ HD }, data));
		else
			ASSERT_OK(st_writer_add(w, "layers.0.router.weight", ST_F32, 2, rshape,
						data));
	}
	if (defect == DEFECT_TWO_LAYOUTS)
		ASSERT_OK(st_writer_add(w, "model.layers.0.block_sparse_moe.gate.weight", ST_F32, 2,
					(uint64_t[]){ HE, HD }, data));
	for (uint32_t e = 0; e < HE && defect != DEFECT_NO_EXPERTS; e++) {
		uint64_t ff = defect == DEFECT_DFF_MISMATCH && e == 2 ? HFF + 2 : HFF;
		uint64_t w2[2] = { HD, ff };

		if (!(defect == DEFECT_W1_MISSING && e == 1)) {
			snprintf(name, sizeof(name), "layers.0.experts.%u.w1", e);
			ASSERT_OK(st_writer_add(w, name, ST_F32, 2, (uint64_t[]){ ff, HD }, data));
		}
		if (e == 1 && defect == DEFECT_W2_SHAPE)
			w2[1] = HFF + 1;
		if (e == 1 && defect == DEFECT_W2_TRANSPOSED) {
			w2[0] = HFF;
			w2[1] = HD;
		}
		if (!(defect == DEFECT_W2_MISSING && e == 1)) {
			snprintf(name, sizeof(name), "layers.0.experts.%u.w2", e);
			ASSERT_OK(st_writer_add(w, name, ST_F32, 2, w2, data));
		}
	}
	ASSERT_OK(st_writer_set_metadata(w, "moed.router", "topk"));
	if (defect == DEFECT_META_EXPERTS)
		ASSERT_OK(st_writer_set_metadata(w, "moed.n_experts", "4"));
	else if (defect == DEFECT_META_EXPERTS_NAN)
		ASSERT_OK(st_writer_set_metadata(w, "moed.n_experts", "three"));
	else
		ASSERT_OK(st_writer_set_metadata(w, "moed.n_experts", "3"));
	if (defect == DEFECT_META_DMODEL)
		ASSERT_OK(st_writer_set_metadata(w, "moed.d_model", "5"));
	if (defect == DEFECT_META_DFF)
		ASSERT_OK(st_writer_set_metadata(w, "moed.d_ff", "7"));
	if (defect == DEFECT_META_SETTING)
		ASSERT_OK(st_writer_set_metadata(w, "moed.top_k", "many"));
	r = st_writer_write(w, path, &d);
	if (r < 0)
		fail_msg("st_writer_write: %s", d.msg);
	st_writer_free(w);
	return path;
}

static void test_hand_model_control(void **state)
{
	char *path = hand_model("hand_ok.safetensors", DEFECT_NONE);
	struct moe_model *m = open_ok(path, NULL, 0);
	const struct moe_layer *L = moe_model_layer(m, 0);

	(void)state;
	assert_int_equal(L->n_experts, HE);
	assert_int_equal(L->d_model, HD);
	assert_int_equal(L->d_ff, HFF);
	moe_model_free(m);
	free(path);
}

static void refused_with(const char *file, enum defect defect, const char *needle)
{
	char *path = hand_model(file, defect);

	open_refused(path, NULL, 0, EINVAL, needle);
	free(path);
}

static void test_wrong_shapes(void **state)
{
	(void)state;
	refused_with("w2_shape.safetensors", DEFECT_W2_SHAPE, "layers.0.experts.1.w2");
	refused_with("w2_transposed.safetensors", DEFECT_W2_TRANSPOSED, "layers.0.experts.1.w2");
	refused_with("dff_mismatch.safetensors", DEFECT_DFF_MISMATCH, "expert 2 has d_ff 8");
	refused_with("router_1d.safetensors", DEFECT_ROUTER_1D, "router");
}

static void test_missing_tensors(void **state)
{
	(void)state;
	refused_with("w2_missing.safetensors", DEFECT_W2_MISSING, "layers.0.experts.1.w2");
	/* expert 1's w1 missing: one expert counted, the router's 3 rows refuse it */
	refused_with("w1_missing.safetensors", DEFECT_W1_MISSING, NULL);
	refused_with("no_experts.safetensors", DEFECT_NO_EXPERTS, "no experts");
	refused_with("no_router.safetensors", DEFECT_NO_ROUTER, "no MoE layer");
	refused_with("two_layouts.safetensors", DEFECT_TWO_LAYOUTS, "two layouts");
}

static void test_metadata_disagrees(void **state)
{
	(void)state;
	refused_with("meta_experts.safetensors", DEFECT_META_EXPERTS, "moed.n_experts");
	refused_with("meta_experts_nan.safetensors", DEFECT_META_EXPERTS_NAN, "moed.n_experts");
	refused_with("meta_dmodel.safetensors", DEFECT_META_DMODEL, "moed.d_model");
	refused_with("meta_dff.safetensors", DEFECT_META_DFF, "moed.d_ff");
	refused_with("meta_setting.safetensors", DEFECT_META_SETTING, "moed.top_k");
}

/*
 * Two layers of widths 1024 and 64 (and no moed.d_model to compare with):
 * moed serves one d_model, so such a model must be refused at load, with a
 * message naming both layers and widths. Before the check, a 16-token batch
 * on the narrow layer made moed write 60 KiB past the client's arena.
 */
static void test_layer_widths_differ(void **state)
{
	static const uint32_t width[2] = { 1024, 64 };
	char *path = path_in("widths_differ.safetensors");
	struct st_writer *w;
	struct diag d = { { 0 } };
	char name[128];
	float *data = calloc((size_t)HFF * 1024, sizeof(float));
	int r;

	(void)state;
	assert_non_null(data);
	ASSERT_OK(st_writer_new(&w));
	for (uint32_t l = 0; l < 2; l++) {
		uint64_t dm = width[l];

		snprintf(name, sizeof(name), "layers.%u.router.weight", l);
		ASSERT_OK(st_writer_add(w, name, ST_F32, 2, (uint64_t[]){ HE, dm }, data));
		for (uint32_t e = 0; e < HE; e++) {
			snprintf(name, sizeof(name), "layers.%u.experts.%u.w1", l, e);
			ASSERT_OK(st_writer_add(w, name, ST_F32, 2, (uint64_t[]){ HFF, dm }, data));
			snprintf(name, sizeof(name), "layers.%u.experts.%u.w2", l, e);
			ASSERT_OK(st_writer_add(w, name, ST_F32, 2, (uint64_t[]){ dm, HFF }, data));
		}
	}
	ASSERT_OK(st_writer_set_metadata(w, "moed.router", "topk"));
	r = st_writer_write(w, path, &d);
	if (r < 0)
		fail_msg("st_writer_write: %s", d.msg);
	st_writer_free(w);
	open_refused(path, NULL, 0, EINVAL, "layer 1 has width (d_model) 64 but layer 0 has 1024");
	free(data);
	free(path);
}

static void test_open_errors(void **state)
{
	char *missing = path_in("does_not_exist.safetensors");
	struct moe_model *m = NULL;
	struct diag d = { { 0 } };

	(void)state;
	assert_true(moe_model_open(missing, NULL, 0, &m, &d) == -ENOENT);
	assert_null(m);
	assert_non_null(strstr(d.msg, "does_not_exist"));
	assert_null(moe_model_free(NULL));
	free(missing);
}

/* ------------------------------------------------------------------- main */

static int group_setup(void **state)
{
	struct engine_opts o;
	const char *base = getenv("TMPDIR");

	(void)state;
	if (!base || !base[0])
		base = "/tmp";
	if (asprintf(&tmp_root, "%s/test_model.XXXXXX", base) < 0 || !mkdtemp(tmp_root))
		return -1;
	engine_opts_init(&o);
	o.n_workers = 2;
	return engine_new(&o, &engine, NULL) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	engine = engine_free(engine);
	if (tmp_root && nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
		return -1;
	free(tmp_root);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_moed_f32),
		cmocka_unit_test(test_settings_from_metadata),
		cmocka_unit_test(test_overrides),
		cmocka_unit_test(test_bad_overrides),
		cmocka_unit_test(test_layouts),
		cmocka_unit_test(test_layout_defaults_and_config_json),
		cmocka_unit_test(test_deepseek_config_json),
		cmocka_unit_test(test_shared_experts),
		cmocka_unit_test(test_sharded_equals_single),
		cmocka_unit_test(test_dtypes),
		cmocka_unit_test(test_hand_model_control),
		cmocka_unit_test(test_wrong_shapes),
		cmocka_unit_test(test_missing_tensors),
		cmocka_unit_test(test_metadata_disagrees),
		cmocka_unit_test(test_layer_widths_differ),
		cmocka_unit_test(test_open_errors),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
