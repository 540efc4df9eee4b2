/* SPDX-License-Identifier: MIT */
/*
 * model: turns a tensor set into MoE layers. It finds the layout and the MoE
 * layers from the router tensors, counts the experts, checks every shape
 * against the layer's (d_model, d_ff, E), resolves the router settings
 * (layout conventions < config.json < "moed.*" metadata < overrides) and
 * makes every weight a float32 array.
 */
#include "model.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_names.h"
#include "util/parse.h"


struct owned_block {
	struct owned_block *next;
	float data[];
};

struct moe_model {
	struct st_set *set;
	struct model_tensor_hook hook; /* .data NULL: tensor_data() */
	bool widen_experts;            /* model_opts.widen_experts */
	enum model_layout layout;
	uint32_t n_layers;
	struct moe_layer **layers; /* [n_layers]; NULL: not an MoE layer */
	struct owned_block *owned; /* converted weights */
};

/*
 * @t's data as @as (ST_F32, or @t's own dtype): in place when @t has that
 * dtype and is aligned for it, else a copy (converted to float32, or the
 * half-precision values moved to an aligned place) the model owns.
 */
static int tensor_data(struct moe_model *m, const struct st_tensor *t, enum st_dtype as,
		       const void **ret, struct diag *d)
{
	size_t size = st_dtype_size(as);
	struct owned_block *b;
	int r = 0;

	/* NULL: values another host holds (st_set_new_virtual), never converted or read */
	if (!t->data || (t->dtype == as && ((uintptr_t)t->data % size) == 0)) {
		*ret = t->data;
		return 0;
	}
	if (t->n_elements > (SIZE_MAX - sizeof(*b)) / size)
		return diag_set(d, -EFBIG, "tensor '%s' is too large", t->name);
	b = malloc(sizeof(*b) + t->n_elements * size);
	if (!b)
		return diag_set(d, -ENOMEM, "out of memory converting tensor '%s'", t->name);
	if (as == ST_F32)
		r = st_tensor_to_f32(t, b->data, d);
	else
		memcpy(b->data, t->data, t->n_elements * size);
	if (r < 0) {
		free(b);
		return r;
	}
	b->next = m->owned;
	m->owned = b;
	*ret = b->data;
	return 0;
}

/* A weight of one routed expert (a shared expert belongs to the whole layer). */
static bool role_is_expert(enum tensor_role role)
{
	return (role >= ROLE_EXPERT_W1 && role <= ROLE_EXPERT_B2) ||
	       (role >= ROLE_SUB_NORM_W && role <= ROLE_SUB_FF2_B);
}

/*
 * Look up @role, check its shape against dims[ndim] and get its data as
 * @as (see tensor_data). Absent and not @required: *ret = NULL, return 0.
 */
static int load_tensor(struct moe_model *m, enum tensor_role role, uint32_t layer,
		       uint32_t expert, uint32_t sub, bool required, unsigned ndim,
		       const uint64_t *dims, enum st_dtype as, const void **ret, struct diag *d)
{
	const struct st_tensor *t;
	char name[256];
	int r;

	*ret = NULL;
	r = model_tensor_name(m->layout, role, layer, expert, sub, name, sizeof(name));
	if (r == -ENOENT && !required)
		return 0;
	if (r < 0)
		return diag_set(d, r, "layer %u: the %s layout has no name for a needed tensor",
				layer, model_layout_name(m->layout));
	t = st_set_find(m->set, name);
	if (!t) {
		if (!required)
			return 0;
		return diag_set(d, -EINVAL, "layer %u: tensor '%s' is missing", layer, name);
	}
	if (t->ndim != ndim)
		return diag_set(d, -EINVAL, "tensor '%s' has %u dimensions, expected %u", name,
				t->ndim, ndim);
	for (unsigned i = 0; i < ndim; i++)
		if (t->shape[i] != dims[i])
			return diag_set(d, -EINVAL,
					"tensor '%s' has size %llu in dimension %u, expected %llu",
					name, (unsigned long long)t->shape[i], i,
					(unsigned long long)dims[i]);
	if (m->hook.data)
		return m->hook.data(m->hook.ctx, t, layer, role_is_expert(role) ? (int64_t)expert : -1,
				    as, ret, d);
	return tensor_data(m, t, as, ret, d);
}

/* load_tensor() as float32. */
static int load_weight(struct moe_model *m, enum tensor_role role, uint32_t layer,
		       uint32_t expert, uint32_t sub, bool required, unsigned ndim,
		       const uint64_t *dims, const float **ret, struct diag *d)
{
	const void *data;
	int r = load_tensor(m, role, layer, expert, sub, required, ndim, dims, ST_F32, &data, d);

	*ret = data;
	return r;
}

static const struct st_tensor *find_role(const struct moe_model *m, enum tensor_role role,
					 uint32_t layer, uint32_t expert, uint32_t sub)
{
	char name[256];

	if (model_tensor_name(m->layout, role, layer, expert, sub, name, sizeof(name)) < 0)
		return NULL;
	return st_set_find(m->set, name);
}

static bool has_tensor(const struct moe_model *m, enum tensor_role role, uint32_t layer,
		       uint32_t expert, uint32_t sub)
{
	return find_role(m, role, layer, expert, sub) != NULL;
}

/*
 * A DeepSeek-V3 config.json as transformers writes it (DeepseekV3Config,
 * saved as the difference from its defaults) may name neither scoring_func
 * nor topk_method, nor n_group and topk_group: DeepseekV3TopkRouter always
 * routes with sigmoid scores, the selection bias and group-limited choice
 * (a group scored by its two best experts). Start from those defaults;
 * what the file says still applies after, except a scoring or a method that
 * DeepSeek-V3 does not use, which is refused rather than guessed at.
 */
/* 1 for a DeepSeek-V3 config (its defaults set), 0 for another, or -EINVAL. */
static int deepseek_v3_defaults(json_t *root, const char *path, struct router_config *c,
				struct diag *d)
{
	json_t *type = json_object_get(root, "model_type");
	json_t *sf = json_object_get(root, "scoring_func"), *tm = json_object_get(root, "topk_method");

	if (!json_is_string(type) || strcmp(json_string_value(type), "deepseek_v3") != 0)
		return 0;
	if (json_is_string(sf) && strcmp(json_string_value(sf), "sigmoid") != 0)
		return diag_set(d, -EINVAL, "%s: deepseek_v3 with scoring_func '%s': DeepSeek-V3 "
					    "scores with sigmoid; no upstream model routes so",
				path, json_string_value(sf));
	if (json_is_string(tm) && strcmp(json_string_value(tm), "noaux_tc") != 0)
		return diag_set(d, -EINVAL, "%s: deepseek_v3 with topk_method '%s': DeepSeek-V3 "
					    "routes with noaux_tc; no upstream model routes so",
				path, json_string_value(tm));
	/* DeepseekV3Config's defaults */
	c->score = SCORE_SIGMOID;
	c->top_k = 8;
	c->normalize = true;
	c->routed_scaling = 2.5;
	c->expert_groups = 8;
	c->topk_groups = 4;
	c->group_score = GROUP_SCORE_TOP2;
	return 1;
}

/* The layout's conventions, then a Hugging Face config.json beside the weights. */
static int apply_layout_defaults(const struct moe_model *m, struct router_config *c,
				 struct diag *d)
{
	char path[PATH_MAX];
	json_error_t jerr;
	json_t *root, *v;
	const char *method;
	bool v3;
	int r = 0;
	FILE *f;

	if (m->layout == LAYOUT_MOED)
		return 0;
	c->kind = ROUTER_TOPK;
	c->activation = ACT_SILU_GATED;
	c->top_k = 2;
	c->normalize = m->layout == LAYOUT_MIXTRAL; /* Mixtral renormalises its top-2 */

	if (snprintf(path, sizeof(path), "%s/config.json", st_set_dir(m->set)) >= (int)sizeof(path))
		return 0;
	f = fopen(path, "re");
	if (!f)
		return 0; /* no config.json: the conventions stand */
	root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
	fclose(f);
	if (!root || !json_is_object(root)) {
		json_decref(root);
		return diag_set(d, -EINVAL, "%s:%d: %s", path, jerr.line, jerr.text);
	}
	r = deepseek_v3_defaults(root, path, c, d);
	if (r < 0)
		goto out;
	v3 = r == 1;
	r = 0;
	v = json_object_get(root, "num_experts_per_tok");
	if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= 1024)
		c->top_k = (uint32_t)json_integer_value(v);
	v = json_object_get(root, "norm_topk_prob");
	if (json_is_boolean(v))
		c->normalize = json_is_true(v);
	v = json_object_get(root, "scoring_func");
	if (json_is_string(v)) {
		if (strcmp(json_string_value(v), "sigmoid") == 0) {
			c->score = SCORE_SIGMOID;
		} else if (strcmp(json_string_value(v), "softmax") == 0) {
			c->score = SCORE_SOFTMAX;
		} else {
			r = diag_set(d, -EINVAL, "%s: scoring_func '%s' is not softmax or sigmoid",
				     path, json_string_value(v));
			goto out;
		}
	}
	/*
	 * DeepSeek: group-limited routing (V3 without topk_method: noaux_tc,
	 * its groups DeepseekV3Config's unless the file names them) and the
	 * scale of the routed weights
	 */
	v = json_object_get(root, "topk_method");
	method = json_is_string(v) ? json_string_value(v) : v3 ? "noaux_tc" : NULL;
	if (method && strcmp(method, "greedy") != 0) {
		json_t *ng = json_object_get(root, "n_group"), *tg = json_object_get(root, "topk_group");
		bool ng_ok = json_is_integer(ng) && json_integer_value(ng) > 0 &&
			     json_integer_value(ng) <= 65536;
		bool tg_ok = json_is_integer(tg) && json_integer_value(tg) > 0 &&
			     json_integer_value(tg) <= 65536;

		if (ng_ok && (tg_ok || v3))
			c->expert_groups = (uint32_t)json_integer_value(ng);
		if (tg_ok && (ng_ok || v3))
			c->topk_groups = (uint32_t)json_integer_value(tg);
		if ((ng_ok && tg_ok) || v3)
			c->group_score = strcmp(method, "noaux_tc") == 0 ? GROUP_SCORE_TOP2
								       : GROUP_SCORE_MAX;
	}
	v = json_object_get(root, "routed_scaling_factor");
	if (json_is_number(v) && json_number_value(v) > 0 && json_number_value(v) <= 1e6)
		c->routed_scaling = json_number_value(v);
	/* exact names: "gelu_pytorch_tanh" is not the erf GELU, and an
	 * activation moed does not have must not be replaced by one it has */
	v = json_object_get(root, "hidden_act");
	if (json_is_string(v)) {
		const char *act = json_string_value(v);

		if (strcmp(act, "silu") == 0 || strcmp(act, "swish") == 0) {
			c->activation = ACT_SILU_GATED;
		} else if (strcmp(act, "gelu") == 0) {
			c->activation = ACT_GELU_GATED;
		} else {
			r = diag_set(d, -EINVAL, "%s: hidden_act '%s' is not supported (silu, gelu)",
				     path, act);
			goto out;
		}
	}
out:
	json_decref(root);
	return r;
}

/* "moed.*" metadata, then the caller's "key=value" overrides. */
static int apply_settings(const struct moe_model *m, const char *const *overrides,
			  unsigned n_overrides, struct router_config *c, struct diag *d)
{
	int r;

	/* every option of the router table, as "moed.<name>" */
	for (size_t i = 0; router_config_key(i); i++) {
		char key[64];
		const char *value;

		snprintf(key, sizeof(key), "moed.%s", router_config_key(i));
		value = st_set_metadata(m->set, key);
		if (!value)
			continue;
		r = router_config_set(c, router_config_key(i), value, d);
		if (r < 0)
			return diag_prefix(d, r, "metadata %s", key);
	}
	for (unsigned i = 0; i < n_overrides; i++) {
		r = router_config_set_pair(c, overrides[i], d);
		if (r < 0)
			return r;
	}
	return 0;
}

static int metadata_matches(const struct moe_model *m, const char *key, uint64_t value,
			    struct diag *d)
{
	const char *s = st_set_metadata(m->set, key);
	uint64_t v;

	if (!s)
		return 0;
	if (parse_u64(s, 0, UINT64_MAX, &v) < 0 || v != value)
		return diag_set(d, -EINVAL, "metadata %s is '%s' but the tensors say %llu", key,
				s, (unsigned long long)value);
	return 0;
}

/*
 * The dtype an FFN's matrices are kept in: the checkpoint's BF16 or F16 when
 * w1, w2 (and w3) all have it and the options keep it, else float32 for all
 * (the kernels take one dtype per expert; F64 or a mix is widened).
 */
static enum st_dtype ffn_dtype(const struct moe_model *m, const struct st_tensor *w1,
			       const struct st_tensor *w2, const struct st_tensor *w3)
{
	enum st_dtype dt = w1->dtype;

	if (m->widen_experts || (dt != ST_BF16 && dt != ST_F16))
		return ST_F32;
	if (!w2 || w2->dtype != dt || (w3 && w3->dtype != dt))
		return ST_F32;
	return dt;
}

static int load_ffn(struct moe_model *m, uint32_t layer, uint32_t expert, bool shared,
		    uint32_t d_model, bool gated, struct ffn_weights *f, struct diag *d)
{
	enum tensor_role w1 = shared ? ROLE_SHARED_W1 : ROLE_EXPERT_W1;
	enum tensor_role w2 = shared ? ROLE_SHARED_W2 : ROLE_EXPERT_W2;
	enum tensor_role w3 = shared ? ROLE_SHARED_W3 : ROLE_EXPERT_W3;
	const struct st_tensor *t = find_role(m, w1, layer, expert, 0);
	enum st_dtype as;
	int r;

	if (!t || t->ndim != 2 || t->shape[1] != d_model || t->shape[0] == 0 ||
	    t->shape[0] > MODEL_MAX_WIDTH)
		return diag_set(d, -EINVAL, "layer %u %s %u: w1 is missing or not [ff][%u] with ff "
					    "in 1..%u",
				layer, shared ? "shared expert" : "expert", expert, d_model,
				MODEL_MAX_WIDTH);
	f->d_ff = (uint32_t)t->shape[0];
	as = ffn_dtype(m, t, find_role(m, w2, layer, expert, 0),
		       gated ? find_role(m, w3, layer, expert, 0) : NULL);
	f->dtype = as == ST_BF16 ? WEIGHT_BF16 : as == ST_F16 ? WEIGHT_F16 : WEIGHT_F32;
	r = load_tensor(m, w1, layer, expert, 0, true, 2, (uint64_t[]){ f->d_ff, d_model }, as,
			&f->w1, d);
	if (r >= 0)
		r = load_tensor(m, w2, layer, expert, 0, true, 2,
				(uint64_t[]){ d_model, f->d_ff }, as, &f->w2, d);
	if (r >= 0)
		r = load_tensor(m, w3, layer, expert, 0, gated, 2,
				(uint64_t[]){ f->d_ff, d_model }, as, &f->w3, d);
	if (r >= 0 && !shared)
		r = load_weight(m, ROLE_EXPERT_B1, layer, expert, 0, false, 1,
				(uint64_t[]){ f->d_ff }, &f->b1, d);
	if (r >= 0 && !shared)
		r = load_weight(m, ROLE_EXPERT_B2, layer, expert, 0, false, 1,
				(uint64_t[]){ d_model }, &f->b2, d);
	if (r < 0)
		return r;
	if (!gated && has_tensor(m, w3, layer, expert, 0))
		return diag_set(d, -EINVAL, "layer %u expert %u has w3 but activation %s is not "
					    "gated (set activation=silu_gated or gelu_gated)",
				layer, expert, m->layers[layer]->router.activation == ACT_RELU
						       ? "relu"
						       : "gelu");
	return 0;
}

static int load_base_expert(struct moe_model *m, struct moe_layer *L, uint32_t e,
			    struct diag *d)
{
	const uint32_t n_sub = L->router.base_sublayers;
	const uint64_t dm = L->d_model, ff = L->d_ff;
	int r = 0;

	L->experts[e].sublayers = calloc(n_sub, sizeof(struct base_sublayer));
	if (!L->experts[e].sublayers)
		return -ENOMEM;
	for (uint32_t s = 0; s < n_sub && r >= 0; s++) {
		struct base_sublayer *b = &L->experts[e].sublayers[s];
		const uint32_t li = L->index;

		r = load_weight(m, ROLE_SUB_NORM_W, li, e, s, true, 1, &dm, &b->norm_w, d);
		if (r >= 0)
			r = load_weight(m, ROLE_SUB_NORM_B, li, e, s, true, 1, &dm, &b->norm_b, d);
		if (r >= 0)
			r = load_weight(m, ROLE_SUB_FF1_W, li, e, s, true, 2,
					(uint64_t[]){ ff, dm }, &b->ff1_w, d);
		if (r >= 0)
			r = load_weight(m, ROLE_SUB_FF1_B, li, e, s, true, 1, &ff, &b->ff1_b, d);
		if (r >= 0)
			r = load_weight(m, ROLE_SUB_FF2_W, li, e, s, true, 2,
					(uint64_t[]){ dm, ff }, &b->ff2_w, d);
		if (r >= 0)
			r = load_weight(m, ROLE_SUB_FF2_B, li, e, s, true, 1, &dm, &b->ff2_b, d);
	}
	return r;
}

/*
 * A transformer's hidden size is the same in every layer, and moed serves one
 * d_model: its clients' info page, the SQE bounds and the staging of merged
 * batches all use one width. A model whose layers differ would have a client
 * size its rows by one layer and moed copy them by another's, so it is
 * refused here, naming both layers. Layers load in order, so the first one
 * already loaded is the reference.
 */
static int layer_width_matches(const struct moe_model *m, const struct moe_layer *L,
			       struct diag *d)
{
	for (uint32_t j = 0; j < L->index; j++) {
		const struct moe_layer *ref = m->layers[j];

		if (!ref)
			continue;
		if (ref->d_model == L->d_model)
			return 0;
		return diag_set(d, -EINVAL,
				"layer %u has width (d_model) %u but layer %u has %u: every layer "
				"of a model must have the same hidden size",
				L->index, L->d_model, ref->index, ref->d_model);
	}
	return 0;
}

static int load_layer(struct moe_model *m, uint32_t li, const char *const *overrides,
		      unsigned n_overrides, struct diag *d)
{
	struct moe_layer *L;
	const struct st_tensor *t;
	bool gated;
	int r;

	L = calloc(1, sizeof(*L));
	if (!L)
		return -ENOMEM;
	m->layers[li] = L;
	L->index = li;
	router_config_init(&L->router);
	r = apply_layout_defaults(m, &L->router, d);
	if (r >= 0)
		r = apply_settings(m, overrides, n_overrides, &L->router, d);
	if (r < 0)
		return r;

	/* d_model and the expert count from the router tensor of the layer */
	if ((t = find_role(m, ROLE_ROUTER_W, li, 0, 0)) && t->ndim == 2) {
		L->d_model = (uint32_t)t->shape[1];
	} else if ((t = find_role(m, ROLE_CENTROIDS, li, 0, 0)) && t->ndim == 2) {
		L->d_model = (uint32_t)t->shape[1];
	} else if ((t = find_role(m, ROLE_OUTER_W, li, 0, 0)) && t->ndim == 2) {
		L->d_model = (uint32_t)t->shape[1];
	} else {
		return diag_set(d, -EINVAL, "layer %u: the router tensor is not a matrix", li);
	}
	if (L->d_model == 0 || t->shape[1] > MODEL_MAX_WIDTH)
		return diag_set(d, -EINVAL, "tensor '%s': model width %llu is not within 1..%u",
				t->name, (unsigned long long)t->shape[1], MODEL_MAX_WIDTH);
	while (L->n_experts < MODEL_MAX_EXPERTS &&
	       (has_tensor(m, ROLE_EXPERT_W1, li, L->n_experts, 0) ||
		has_tensor(m, ROLE_SUB_NORM_W, li, L->n_experts, 0)))
		L->n_experts++;
	if (L->n_experts == 0)
		return diag_set(d, -EINVAL, "layer %u has a router but no experts", li);
	r = layer_width_matches(m, L, d);
	if (r >= 0)
		r = metadata_matches(m, "moed.n_experts", L->n_experts, d);
	if (r >= 0)
		r = metadata_matches(m, "moed.d_model", L->d_model, d);
	if (r < 0)
		return r;

	gated = L->router.activation == ACT_SILU_GATED || L->router.activation == ACT_GELU_GATED;
	r = load_weight(m, ROLE_ROUTER_W, li, 0, 0, false, 2,
			(uint64_t[]){ L->n_experts, L->d_model }, &L->router_w, d);
	if (r >= 0)
		r = load_weight(m, ROLE_ROUTER_B, li, 0, 0, false, 1,
				(uint64_t[]){ L->n_experts }, &L->router_b, d);
	if (r >= 0)
		r = load_weight(m, ROLE_SELECTION_BIAS, li, 0, 0, false, 1,
				(uint64_t[]){ L->n_experts }, &L->selection_bias, d);
	if (r >= 0)
		r = load_weight(m, ROLE_CENTROIDS, li, 0, 0, false, 2,
				(uint64_t[]){ L->n_experts, L->d_model }, &L->centroids, d);
	if (r >= 0 && has_tensor(m, ROLE_OUTER_W, li, 0, 0)) {
		const uint32_t X = L->router.groups, Y = L->router.experts_per_group;

		if ((uint64_t)X * Y != L->n_experts)
			return diag_set(d, -EINVAL, "layer %u: hierarchical router needs groups x "
						    "experts_per_group = %u experts, have %u x %u",
					li, L->n_experts, X, Y);
		r = load_weight(m, ROLE_OUTER_W, li, 0, 0, true, 2,
				(uint64_t[]){ X, L->d_model }, &L->outer_w, d);
		if (r >= 0)
			r = load_weight(m, ROLE_INNER_W, li, 0, 0, true, 3,
					(uint64_t[]){ X, Y, L->d_model }, &L->inner_w, d);
	}
	if (r < 0)
		return r;

	L->experts = calloc(L->n_experts, sizeof(*L->experts));
	if (!L->experts)
		return -ENOMEM;
	if (has_tensor(m, ROLE_SUB_NORM_W, li, 0, 0)) {
		t = find_role(m, ROLE_SUB_FF1_W, li, 0, 0);
		if (!t || t->ndim != 2 || t->shape[0] == 0 || t->shape[0] > MODEL_MAX_WIDTH)
			return diag_set(d, -EINVAL, "layer %u: BASE expert 0 has no ff1 matrix",
					li);
		L->d_ff = (uint32_t)t->shape[0];
		for (uint32_t e = 0; e < L->n_experts && r >= 0; e++)
			r = load_base_expert(m, L, e, d);
	} else {
		for (uint32_t e = 0; e < L->n_experts && r >= 0; e++) {
			r = load_ffn(m, li, e, false, L->d_model, gated, &L->experts[e].ffn, d);
			if (r >= 0 && e > 0 && L->experts[e].ffn.d_ff != L->experts[0].ffn.d_ff)
				r = diag_set(d, -EINVAL, "layer %u: expert %u has d_ff %u, expert "
							 "0 has %u",
					     li, e, L->experts[e].ffn.d_ff,
					     L->experts[0].ffn.d_ff);
		}
		L->d_ff = L->experts[0].ffn.d_ff;
	}
	if (r >= 0)
		r = metadata_matches(m, "moed.d_ff", L->d_ff, d);
	if (r >= 0 && has_tensor(m, ROLE_SHARED_W1, li, 0, 0)) {
		L->has_shared = true;
		r = load_ffn(m, li, 0, true, L->d_model, gated, &L->shared, d);
		/* Qwen2-MoE's shared-expert gate is a [1][d] Linear */
		if (r >= 0)
			r = load_weight(m, ROLE_SHARED_GATE, li, 0, 0, false, 2,
					(uint64_t[]){ 1, L->d_model }, &L->shared_gate, d);
	}
	if (r >= 0)
		r = router_config_validate(&L->router, L->n_experts, d);
	if (r < 0)
		return diag_prefix(d, r, "layer %u", li);
	return 0;
}

int moe_model_open(const char *path, const char *const *overrides, unsigned n_overrides,
		   struct moe_model **ret_model, struct diag *d)
{
	struct st_set *set;
	int r;

	r = st_set_open(path, &set, d);
	if (r < 0)
		return r;
	return moe_model_open_set(set, path,
				  &(struct model_opts){ .overrides = overrides,
							.n_overrides = n_overrides },
				  ret_model, d);
}

int moe_model_open_set(struct st_set *set, const char *path, const struct model_opts *opts,
		       struct moe_model **ret_model, struct diag *d)
{
	const char *const *overrides = opts ? opts->overrides : NULL;
	unsigned n_overrides = opts ? opts->n_overrides : 0;
	struct moe_model *m;
	bool found = false;
	int r;

	m = calloc(1, sizeof(*m));
	if (!m) {
		st_set_free(set);
		return -ENOMEM;
	}
	m->set = set;
	if (opts && opts->hook)
		m->hook = *opts->hook;
	m->widen_experts = opts && opts->widen_experts;

	/* The MoE layers are those with a router tensor; the layout is theirs. */
	for (size_t i = 0; i < st_set_tensor_count(m->set); i++) {
		enum model_layout layout;
		uint32_t layer;

		if (!model_name_router_layer(st_set_tensor_at(m->set, i)->name, &layout, &layer))
			continue;
		if (found && layout != m->layout &&
		    !(layout == LAYOUT_QWEN2 && m->layout == LAYOUT_DEEPSEEK)) {
			r = diag_set(d, -EINVAL, "%s: tensors of two layouts (%s, %s)", path,
				     model_layout_name(m->layout), model_layout_name(layout));
			goto fail;
		}
		if (!found)
			m->layout = layout;
		found = true;
		if (layer + 1 > m->n_layers)
			m->n_layers = layer + 1;
	}
	if (!found) {
		r = diag_set(d, -EINVAL, "%s: no MoE layer (no router tensor of a known layout)",
			     path);
		goto fail;
	}
	/* DeepSeek names its shared experts in the plural; otherwise it is Qwen2-MoE's layout */
	if (m->layout == LAYOUT_QWEN2) {
		for (uint32_t l = 0; l < m->n_layers; l++) {
			m->layout = LAYOUT_DEEPSEEK;
			if (has_tensor(m, ROLE_SHARED_W1, l, 0, 0))
				break;
			m->layout = LAYOUT_QWEN2;
		}
	}

	m->layers = calloc(m->n_layers, sizeof(*m->layers));
	if (!m->layers) {
		r = -ENOMEM;
		goto fail;
	}
	for (uint32_t l = 0; l < m->n_layers; l++) {
		enum model_layout layout;
		uint32_t layer;
		char name[256];
		bool moe = false;

		for (enum tensor_role role = ROLE_ROUTER_W; role <= ROLE_OUTER_W && !moe; role++)
			if (role != ROLE_ROUTER_B &&
			    model_tensor_name(m->layout, role, l, 0, 0, name, sizeof(name)) == 0)
				moe = st_set_find(m->set, name) &&
				      model_name_router_layer(name, &layout, &layer);
		if (!moe)
			continue;
		r = load_layer(m, l, overrides, n_overrides, d);
		if (r < 0) {
			diag_prefix(d, r, "%s", path);
			goto fail;
		}
	}
	*ret_model = m;
	return 0;
fail:
	moe_model_free(m);
	return r;
}

struct moe_model *moe_model_free(struct moe_model *m)
{
	if (!m)
		return NULL;
	for (uint32_t l = 0; m->layers && l < m->n_layers; l++) {
		struct moe_layer *L = m->layers[l];

		if (!L)
			continue;
		for (uint32_t e = 0; L->experts && e < L->n_experts; e++)
			free(L->experts[e].sublayers);
		free(L->experts);
		free(L);
	}
	free(m->layers);
	while (m->owned) {
		struct owned_block *next = m->owned->next;

		free(m->owned);
		m->owned = next;
	}
	st_set_free(m->set);
	free(m);
	return NULL;
}

uint32_t moe_model_n_layers(const struct moe_model *m)
{
	return m->n_layers;
}

const struct moe_layer *moe_model_layer(const struct moe_model *m, uint32_t layer)
{
	return layer < m->n_layers ? m->layers[layer] : NULL;
}

const struct st_set *moe_model_tensors(const struct moe_model *m)
{
	return m->set;
}

const char *moe_model_layout(const struct moe_model *m)
{
	return model_layout_name(m->layout);
}
