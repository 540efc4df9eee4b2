/* SPDX-License-Identifier: MIT */
/*
 * synth_model: writes a seeded synthetic model; see synth_model.h. Tensors are
 * generated shard by shard (one shard holds whole layers, the last also the
 * input), so memory holds one shard at a time.
 */
#include "synth_model.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/half.h"
#include "router/router_config.h"
#include "util/rng.h"

/* Standard normal by Box-Muller. */
static float rng_normal(uint64_t *g)
{
	double u1 = 1.0 - rng_uniform01(g);
	double u2 = rng_uniform01(g);

	return (float)(sqrt(-2.0 * log(u1)) * cos(2 * M_PI * u2));
}

struct shard {
	struct st_writer *w;
	void **bufs;
	size_t n_bufs, cap_bufs;
};

static int shard_keep(struct shard *s, void *p)
{
	if (s->n_bufs == s->cap_bufs) {
		size_t cap = s->cap_bufs ? s->cap_bufs * 2 : 64;
		void **n = realloc(s->bufs, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		s->bufs = n;
		s->cap_bufs = cap;
	}
	s->bufs[s->n_bufs++] = p;
	return 0;
}

static void shard_clear(struct shard *s)
{
	for (size_t i = 0; i < s->n_bufs; i++)
		free(s->bufs[i]);
	free(s->bufs);
	st_writer_free(s->w);
	*s = (struct shard){ 0 };
}

/* Add a tensor of @n seeded values (normal * scale + offset) in the model dtype. */
static int add_random(struct shard *s, uint64_t *g, const char *name, unsigned ndim,
		      const uint64_t *shape, float scale, float offset, enum st_dtype dtype)
{
	uint64_t n = 1;
	size_t es = st_dtype_size(dtype);
	void *buf;
	int r;

	for (unsigned i = 0; i < ndim; i++)
		n *= shape[i];
	buf = malloc(n * es > 0 ? n * es : 1);
	if (!buf)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++) {
		float v = rng_normal(g) * scale + offset;

		if (dtype == ST_BF16)
			((uint16_t *)buf)[i] = f32_to_bf16(v);
		else if (dtype == ST_F16)
			((uint16_t *)buf)[i] = f32_to_f16(v);
		else
			((float *)buf)[i] = v;
	}
	r = shard_keep(s, buf);
	if (r < 0) {
		free(buf);
		return r;
	}
	return st_writer_add(s->w, name, dtype, ndim, shape, buf);
}

static int add_role(struct shard *s, const struct synth_opts *o, uint64_t *g,
		    enum tensor_role role, uint32_t layer, uint32_t e, uint32_t sub,
		    unsigned ndim, const uint64_t *shape, float scale, float offset)
{
	char name[256];
	int r = model_tensor_name(o->layout, role, layer, e, sub, name, sizeof(name));

	if (r < 0)
		return r;
	return add_random(s, g, name, ndim, shape, scale, offset, o->dtype);
}

static int add_layer(struct shard *s, const struct synth_opts *o, const struct router_config *c,
		     uint32_t l, uint64_t *g)
{
	const uint64_t d = o->d_model, ff = o->d_ff, E = o->n_experts;
	const float sd = 1.0f / sqrtf((float)d), sf = 1.0f / sqrtf((float)ff);
	bool gated = c->activation == ACT_SILU_GATED || c->activation == ACT_GELU_GATED;
	int r = 0;

	if (c->kind == ROUTER_BASE) {
		r = add_role(s, o, g, ROLE_CENTROIDS, l, 0, 0, 2, (uint64_t[]){ E, d }, 0.5f * sd,
			     0);
		for (uint32_t e = 0; e < E && r >= 0; e++)
			for (uint32_t sub = 0; sub < c->base_sublayers && r >= 0; sub++) {
				r = add_role(s, o, g, ROLE_SUB_NORM_W, l, e, sub, 1, &d, 0.1f, 1);
				if (r >= 0)
					r = add_role(s, o, g, ROLE_SUB_NORM_B, l, e, sub, 1, &d,
						     0.1f, 0);
				if (r >= 0)
					r = add_role(s, o, g, ROLE_SUB_FF1_W, l, e, sub, 2,
						     (uint64_t[]){ ff, d }, sd, 0);
				if (r >= 0)
					r = add_role(s, o, g, ROLE_SUB_FF1_B, l, e, sub, 1, &ff,
						     0.1f, 0);
				if (r >= 0)
					r = add_role(s, o, g, ROLE_SUB_FF2_W, l, e, sub, 2,
						     (uint64_t[]){ d, ff }, sf, 0);
				if (r >= 0)
					r = add_role(s, o, g, ROLE_SUB_FF2_B, l, e, sub, 1, &d,
						     0.1f, 0);
			}
		return r;
	}
	if (c->kind == ROUTER_HIERARCHICAL) {
		r = add_role(s, o, g, ROLE_OUTER_W, l, 0, 0, 2, (uint64_t[]){ c->groups, d }, sd,
			     0);
		if (r >= 0)
			r = add_role(s, o, g, ROLE_INNER_W, l, 0, 0, 3,
				     (uint64_t[]){ c->groups, c->experts_per_group, d }, sd, 0);
	} else {
		r = add_role(s, o, g, ROLE_ROUTER_W, l, 0, 0, 2, (uint64_t[]){ E, d }, sd, 0);
		if (r >= 0 && o->bias)
			r = add_role(s, o, g, ROLE_ROUTER_B, l, 0, 0, 1, &E, 0.1f, 0);
	}
	for (uint32_t e = 0; e < E && r >= 0; e++) {
		r = add_role(s, o, g, ROLE_EXPERT_W1, l, e, 0, 2, (uint64_t[]){ ff, d }, sd, 0);
		if (r >= 0)
			r = add_role(s, o, g, ROLE_EXPERT_W2, l, e, 0, 2, (uint64_t[]){ d, ff }, sf,
				     0);
		if (r >= 0 && gated)
			r = add_role(s, o, g, ROLE_EXPERT_W3, l, e, 0, 2, (uint64_t[]){ ff, d }, sd,
				     0);
		if (r >= 0 && o->bias)
			r = add_role(s, o, g, ROLE_EXPERT_B1, l, e, 0, 1, &ff, 0.1f, 0);
		if (r >= 0 && o->bias)
			r = add_role(s, o, g, ROLE_EXPERT_B2, l, e, 0, 1, &d, 0.1f, 0);
	}
	if (r >= 0 && o->shared_d_ff) {
		const uint64_t sff = o->shared_d_ff;

		r = add_role(s, o, g, ROLE_SHARED_W1, l, 0, 0, 2, (uint64_t[]){ sff, d }, sd, 0);
		if (r >= 0)
			r = add_role(s, o, g, ROLE_SHARED_W2, l, 0, 0, 2, (uint64_t[]){ d, sff },
				     1.0f / sqrtf((float)sff), 0);
		if (r >= 0 && gated)
			r = add_role(s, o, g, ROLE_SHARED_W3, l, 0, 0, 2, (uint64_t[]){ sff, d }, sd,
				     0);
		if (r >= 0 && o->layout == LAYOUT_QWEN2)
			r = add_role(s, o, g, ROLE_SHARED_GATE, l, 0, 0, 2, (uint64_t[]){ 1, d }, sd,
				     0);
	}
	return r;
}

static int add_metadata(struct shard *s, const struct synth_opts *o)
{
	char v[32];
	int r;

	snprintf(v, sizeof(v), "%u", o->n_layers);
	r = st_writer_set_metadata(s->w, "moed.format", "1");
	if (r >= 0)
		r = st_writer_set_metadata(s->w, "moed.layers", v);
	if (r >= 0) {
		snprintf(v, sizeof(v), "%u", o->d_model);
		r = st_writer_set_metadata(s->w, "moed.d_model", v);
	}
	if (r >= 0) {
		snprintf(v, sizeof(v), "%u", o->d_ff);
		r = st_writer_set_metadata(s->w, "moed.d_ff", v);
	}
	if (r >= 0) {
		snprintf(v, sizeof(v), "%u", o->n_experts);
		r = st_writer_set_metadata(s->w, "moed.n_experts", v);
	}
	for (unsigned i = 0; i < o->n_settings && r >= 0; i++) {
		const char *eq = strchr(o->settings[i], '=');
		char key[80];

		snprintf(key, sizeof(key), "moed.%.*s", (int)(eq - o->settings[i]),
			 o->settings[i]);
		r = st_writer_set_metadata(s->w, key, eq + 1);
	}
	return r;
}

void synth_opts_init(struct synth_opts *o)
{
	*o = (struct synth_opts){ .layout = LAYOUT_MOED, .dtype = ST_F32, .d_model = 256,
				  .d_ff = 512, .n_experts = 8, .n_layers = 1, .tokens = 16,
				  .shards = 1, .seed = 1 };
}

void synth_opts_default_model(struct synth_opts *o)
{
	synth_opts_init(o);
	o->layout = LAYOUT_MIXTRAL;
	o->n_layers = 2;
	o->settings[0] = "router=topk";
	o->settings[1] = "top_k=2";
	o->settings[2] = "activation=silu_gated";
	o->settings[3] = "normalize=true";
	o->n_settings = 4;
}

static int resolve_config(const struct synth_opts *o, struct router_config *c, struct diag *d)
{
	int r;

	router_config_init(c);
	for (unsigned i = 0; i < o->n_settings; i++) {
		r = router_config_set_pair(c, o->settings[i], d);
		if (r < 0)
			return r;
	}
	if (o->layout != LAYOUT_MOED &&
	    (c->kind == ROUTER_BASE || c->kind == ROUTER_HIERARCHICAL || o->bias))
		return diag_set(d, -EINVAL, "the %s layout has no tensors for %s; use --layout moed",
				model_layout_name(o->layout),
				o->bias ? "biases" : router_kind_name(c->kind));
	if (o->layout != LAYOUT_MOED && c->activation != ACT_SILU_GATED &&
	    c->activation != ACT_GELU_GATED)
		return diag_set(d, -EINVAL, "the %s layout has gated experts: use activation "
					    "silu_gated or gelu_gated",
				model_layout_name(o->layout));
	if (c->kind == ROUTER_HIERARCHICAL &&
	    (uint64_t)c->groups * c->experts_per_group != o->n_experts)
		return diag_set(d, -EINVAL, "groups x experts_per_group must equal --experts");
	return router_config_validate(c, o->n_experts, d);
}

int synth_model_write(const struct synth_opts *o, struct diag *d)
{
	struct router_config c;
	uint64_t g = o->seed * 0x2545f4914f6cdd1dULL + 1;
	json_t *index = NULL, *map = NULL;
	char path[PATH_MAX];
	int r;

	if (!o->output || o->d_model == 0 || o->d_ff == 0 || o->n_experts == 0 ||
	    o->n_layers == 0 || o->shards == 0 || o->shards > o->n_layers + 1)
		return diag_set(d, -EINVAL, "gen-model: sizes must be positive and shards at most "
					    "layers + 1");
	r = resolve_config(o, &c, d);
	if (r < 0)
		return r;
	if (o->shards > 1) {
		if (mkdir(o->output, 0755) < 0 && errno != EEXIST)
			return diag_set(d, -errno, "cannot create folder %s: %m", o->output);
		index = json_object();
		map = json_object();
		if (!index || !map || json_object_set(index, "weight_map", map) < 0) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (uint32_t sh = 0; sh < o->shards; sh++) {
		struct shard s = { 0 };
		uint32_t l0 = (uint32_t)((uint64_t)o->n_layers * sh / o->shards);
		uint32_t l1 = (uint32_t)((uint64_t)o->n_layers * (sh + 1) / o->shards);
		char file[64];

		r = st_writer_new(&s.w);
		for (uint32_t l = l0; l < l1 && r >= 0; l++)
			r = add_layer(&s, o, &c, l, &g);
		if (r >= 0 && sh + 1 == o->shards && o->tokens)
			r = add_random(&s, &g, "input", 2,
				       (uint64_t[]){ o->tokens, o->d_model }, 1.0f, 0, ST_F32);
		if (r >= 0)
			r = add_metadata(&s, o);
		if (o->shards > 1) {
			snprintf(file, sizeof(file), "model-%05u-of-%05u.safetensors", sh + 1,
				 o->shards);
			snprintf(path, sizeof(path), "%s/%s", o->output, file);
		} else {
			snprintf(path, sizeof(path), "%s", o->output);
		}
		if (r >= 0)
			r = st_writer_write(s.w, path, d);
		if (r >= 0 && map) {
			struct st_file *f = NULL;

			/* the index lists what the shard really holds */
			r = st_file_open(path, &f, d);
			for (size_t i = 0; r >= 0 && i < st_file_tensor_count(f); i++)
				if (json_object_set_new(map, st_file_tensor_at(f, i)->name,
							json_string(file)) < 0)
					r = -ENOMEM;
			st_file_free(f);
		}
		shard_clear(&s);
		if (r < 0)
			goto out;
	}
	if (index) {
		snprintf(path, sizeof(path), "%s/model.safetensors.index.json", o->output);
		if (json_dump_file(index, path, JSON_INDENT(2) | JSON_SORT_KEYS) < 0)
			r = diag_set(d, -EIO, "cannot write %s", path);
	}
out:
	json_decref(map);
	json_decref(index);
	if (r == -ENOMEM)
		diag_set(d, r, "out of memory generating the model");
	return r;
}
