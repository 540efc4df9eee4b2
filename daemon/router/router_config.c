/* SPDX-License-Identifier: MIT */
/*
 * router_config: one table of router options. The same rows parse a file's
 * "moed.*" metadata, parse command-line overrides and print the help, so a new
 * option is one row here plus the code that uses it.
 */
#include "router_config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "util/parse.h"

static const char *const kind_names[] = { "switch", "gshard", "topk", "base", "hierarchical",
					  "given", NULL };
static const char *const drop_names[] = { "zero", "passthrough", NULL };
static const char *const scale_names[] = { "output", "input", "none", NULL };
static const char *const score_names[] = { "softmax", "sigmoid", NULL };
static const char *const variant_names[] = { "meshtf", "fairscale", NULL };
static const char *const policy_names[] = { "all", "none", "threshold", "random", NULL };
static const char *const base_names[] = { "greedy", "balanced", NULL };
static const char *const priority_names[] = { "token", "score", NULL };
static const char *const activation_names[] = { "relu", "gelu", "gelu_tanh", "silu_gated",
						 "gelu_gated", NULL };
static const char *const nonfinite_names[] = { "fail", "sanitize", NULL };
static const char *const group_score_names[] = { "max", "top2", NULL };

enum option_type {
	OPT_ENUM,
	OPT_U32,
	OPT_U64,
	OPT_DOUBLE,
	OPT_BOOL,
};

struct option_row {
	const char *name;
	enum option_type type;
	size_t offset;
	const char *const *names; /* OPT_ENUM */
	double min, max;          /* numbers */
	const char *doc;
};

#define ROW(_name, _type, _field, _names, _min, _max, _doc)                                    \
	{ _name, _type, offsetof(struct router_config, _field), _names, _min, _max, _doc }

static const struct option_row option_rows[] = {
	ROW("router", OPT_ENUM, kind, kind_names, 0, 0,
	    "switch|gshard|topk|base|hierarchical|given"),
	ROW("top_k", OPT_U32, top_k, NULL, 1, 1024, "experts per token"),
	ROW("capacity_factor", OPT_DOUBLE, capacity_factor, NULL, 0, 1e6,
	    "capacity = max(int(cf*k*T/E), min_capacity, 1); 0 = dropless"),
	ROW("min_capacity", OPT_U32, min_capacity, NULL, 0, 1u << 30, "lower bound of capacity"),
	ROW("drop", OPT_ENUM, drop, drop_names, 0, 0, "zero|passthrough: output of a dropped token"),
	ROW("scale", OPT_ENUM, scale, scale_names, 0, 0,
	    "output|input|none: y = g*E(x), E(g*x) or E(x)"),
	ROW("normalize", OPT_BOOL, normalize, NULL, 0, 0, "renormalise the top-k weights"),
	ROW("score", OPT_ENUM, score, score_names, 0, 0, "softmax|sigmoid (topk)"),
	ROW("top2_variant", OPT_ENUM, top2_variant, variant_names, 0, 0, "meshtf|fairscale (gshard)"),
	ROW("second_policy", OPT_ENUM, second_policy, policy_names, 0, 0,
	    "all|none|threshold|random (gshard meshtf, hierarchical)"),
	ROW("second_threshold", OPT_DOUBLE, second_threshold, NULL, 0, 1, "for threshold|random"),
	ROW("seed", OPT_U64, seed, NULL, 0, 1.8446744073709552e19, "seed of the random policy"),
	ROW("base_mode", OPT_ENUM, base_mode, base_names, 0, 0, "greedy|balanced (base)"),
	ROW("base_sublayers", OPT_U32, base_sublayers, NULL, 1, 64, "sublayers per BASE expert"),
	ROW("groups", OPT_U32, groups, NULL, 0, 1u << 20, "hierarchical: expert groups X"),
	ROW("experts_per_group", OPT_U32, experts_per_group, NULL, 0, 1u << 20,
	    "hierarchical: experts per group Y"),
	ROW("priority", OPT_ENUM, priority, priority_names, 0, 0,
	    "token|score: who keeps a full expert's slots (switch, gshard, topk): token order, "
	    "or V-MoE's descending top-1 score with every first choice before any second"),
	ROW("activation", OPT_ENUM, activation, activation_names, 0, 0,
	    "relu|gelu|gelu_tanh|silu_gated|gelu_gated"),
	ROW("nonfinite", OPT_ENUM, nonfinite, nonfinite_names, 0, 0,
	    "fail|sanitize: NaN/inf in a batch fails it, or becomes finite"),
	ROW("expert_groups", OPT_U32, expert_groups, NULL, 0, 1u << 16,
	    "topk: DeepSeek expert groups (n_group); 0 = no group limit"),
	ROW("topk_groups", OPT_U32, topk_groups, NULL, 0, 1u << 16,
	    "topk: groups a token may use (topk_group)"),
	ROW("group_score", OPT_ENUM, group_score, group_score_names, 0, 0,
	    "max|top2: a group's score (DeepSeek-V2 | V3)"),
	ROW("routed_scaling", OPT_DOUBLE, routed_scaling, NULL, 0, 1e6,
	    "topk: factor on the routed weights (routed_scaling_factor)"),
};

#define N_ROWS (sizeof(option_rows) / sizeof(option_rows[0]))

void router_config_init(struct router_config *c)
{
	*c = (struct router_config){
		.kind = ROUTER_TOPK,
		.top_k = 1,
		.capacity_factor = 0.0,
		.min_capacity = 0,
		.drop = DROP_ZERO,
		.scale = SCALE_OUTPUT,
		.normalize = false,
		.score = SCORE_SOFTMAX,
		.top2_variant = TOP2_MESHTF,
		.second_policy = SECOND_ALL,
		.second_threshold = 0.2,
		.seed = 0,
		.base_mode = BASE_GREEDY,
		.base_sublayers = 2,
		.priority = PRIORITY_TOKEN,
		.activation = ACT_RELU,
		.nonfinite = NONFINITE_FAIL,
		.expert_groups = 0,
		.topk_groups = 0,
		.group_score = GROUP_SCORE_TOP2,
		.routed_scaling = 1.0,
	};
}

int router_config_set(struct router_config *c, const char *key, const char *value,
		      struct diag *d)
{
	const struct option_row *row = NULL;
	char *field;
	int r = 0;

	for (size_t i = 0; i < N_ROWS; i++)
		if (strcmp(option_rows[i].name, key) == 0)
			row = &option_rows[i];
	if (!row)
		return -ENOENT;
	field = (char *)c + row->offset;

	switch (row->type) {
	case OPT_ENUM: {
		int v = parse_name(value, row->names);

		if (v < 0)
			return diag_set(d, -EINVAL, "option %s: '%s' is not one of %s", key, value,
					row->doc);
		memcpy(field, &(int){ v }, sizeof(int));
		return 0;
	}
	case OPT_U32: {
		uint32_t v;

		r = parse_u32(value, (uint32_t)row->min, (uint32_t)row->max, &v);
		if (r >= 0)
			memcpy(field, &v, sizeof(v));
		break;
	}
	case OPT_U64: {
		uint64_t v;

		r = parse_u64(value, 0, UINT64_MAX, &v);
		if (r >= 0)
			memcpy(field, &v, sizeof(v));
		break;
	}
	case OPT_DOUBLE: {
		double v;

		r = parse_double(value, row->min, row->max, &v);
		if (r >= 0)
			memcpy(field, &v, sizeof(v));
		break;
	}
	case OPT_BOOL: {
		bool v;

		r = parse_bool(value, &v);
		if (r >= 0)
			memcpy(field, &v, sizeof(v));
		break;
	}
	}
	if (r < 0)
		return diag_set(d, -EINVAL, "option %s: bad value '%s' (%s, range %g..%g)", key,
				value, row->doc, row->min, row->max);
	return 0;
}

int router_config_set_pair(struct router_config *c, const char *pair, struct diag *d)
{
	const char *eq = strchr(pair, '=');
	char key[64];
	int r;

	if (!eq || (size_t)(eq - pair) >= sizeof(key))
		return diag_set(d, -EINVAL, "option '%s' is not key=value", pair);
	memcpy(key, pair, (size_t)(eq - pair));
	key[eq - pair] = '\0';
	r = router_config_set(c, key, eq + 1, d);
	if (r == -ENOENT)
		return diag_set(d, -EINVAL, "unknown router option '%s'", key);
	return r;
}

const char *router_config_key(size_t i)
{
	return i < N_ROWS ? option_rows[i].name : NULL;
}

bool router_config_per_token(const struct router_config *c)
{
	/* capacity is a share of the batch's tokens: a token's slot depends on
	 * how many came before it */
	if (c->capacity_factor != 0)
		return false;
	switch (c->kind) {
	case ROUTER_SWITCH:
	case ROUTER_TOPK:
	case ROUTER_HIERARCHICAL:
		return true;
	case ROUTER_GSHARD:
		/* one random stream over the batch: a token's draw depends on its position */
		return c->second_policy != SECOND_RANDOM;
	case ROUTER_BASE:
		return c->base_mode == BASE_GREEDY;
	case ROUTER_GIVEN:
		return false;
	}
	return false;
}

uint32_t router_config_slots(const struct router_config *c)
{
	switch (c->kind) {
	case ROUTER_SWITCH:
	case ROUTER_BASE:
		return 1;
	case ROUTER_GSHARD:
		return 2;
	case ROUTER_HIERARCHICAL:
		return 4;
	case ROUTER_TOPK:
	case ROUTER_GIVEN:
		return c->top_k;
	}
	return c->top_k;
}

int router_config_validate(const struct router_config *c, uint32_t n_experts, struct diag *d)
{
	uint32_t k = router_config_slots(c);

	if (n_experts == 0)
		return diag_set(d, -EINVAL, "the layer has no experts");
	switch (c->kind) {
	case ROUTER_GSHARD:
		if (n_experts < 2)
			return diag_set(d, -EINVAL, "gshard needs at least 2 experts, have %u",
					n_experts);
		if (c->top2_variant == TOP2_FAIRSCALE && c->second_policy != SECOND_ALL)
			return diag_set(d, -EINVAL,
					"gshard fairscale has no second-expert policy: use "
					"second_policy=all or top2_variant=meshtf");
		break;
	case ROUTER_TOPK:
	case ROUTER_GIVEN:
		if (c->top_k < 1 || c->top_k > n_experts)
			return diag_set(d, -EINVAL, "top_k %u is not within 1..%u experts", c->top_k,
					n_experts);
		if (c->kind == ROUTER_TOPK && c->expert_groups > 0) {
			uint32_t per = n_experts / c->expert_groups;

			if (n_experts % c->expert_groups != 0)
				return diag_set(d, -EINVAL, "expert_groups %u does not divide %u "
							    "experts",
						c->expert_groups, n_experts);
			if (c->topk_groups < 1 || c->topk_groups > c->expert_groups)
				return diag_set(d, -EINVAL, "topk_groups %u is not within 1..%u "
							    "expert groups",
						c->topk_groups, c->expert_groups);
			if ((uint64_t)c->topk_groups * per < c->top_k)
				return diag_set(d, -EINVAL, "topk_groups %u x %u experts per group "
							    "leave fewer than top_k %u experts",
						c->topk_groups, per, c->top_k);
			if (c->group_score == GROUP_SCORE_TOP2 && per < 2)
				return diag_set(d, -EINVAL, "group_score top2 needs at least 2 "
							    "experts per group");
		}
		break;
	case ROUTER_HIERARCHICAL:
		if (c->groups < 2 || c->experts_per_group < 2 ||
		    (uint64_t)c->groups * c->experts_per_group != n_experts)
			return diag_set(d, -EINVAL,
					"hierarchical: groups %u x experts_per_group %u must be "
					"%u experts, each at least 2",
					c->groups, c->experts_per_group, n_experts);
		if (c->capacity_factor != 0)
			return diag_set(d, -EINVAL, "hierarchical routing is dropless: "
						    "capacity_factor must be 0");
		break;
	case ROUTER_SWITCH:
	case ROUTER_BASE:
		break;
	}
	if (c->kind == ROUTER_BASE && c->base_mode == BASE_BALANCED && c->capacity_factor != 0)
		return diag_set(d, -EINVAL, "base balanced assigns T/E tokens per expert itself: "
					    "capacity_factor must be 0");
	if (c->drop == DROP_PASSTHROUGH && c->score == SCORE_SIGMOID && c->scale != SCALE_NONE &&
	    c->kind == ROUTER_TOPK)
		return diag_set(d, -EINVAL, "drop=passthrough scales by the top-1 softmax "
					    "probability: it needs score=softmax or scale=none");
	(void)k;
	return 0;
}

const char *router_kind_name(enum router_kind k)
{
	return (unsigned)k < sizeof(kind_names) / sizeof(kind_names[0]) - 1 ? kind_names[k] : "?";
}

const char *activation_name(enum activation a)
{
	return (unsigned)a < sizeof(activation_names) / sizeof(activation_names[0]) - 1
		       ? activation_names[a]
		       : "?";
}

void router_config_print_help(FILE *out)
{
	for (size_t i = 0; i < N_ROWS; i++)
		fprintf(out, "  --%-18s %s\n", option_rows[i].name, option_rows[i].doc);
}
