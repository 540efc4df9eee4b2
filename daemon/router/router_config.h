/* SPDX-License-Identifier: MIT */
/*
 * The settings of a router and of the layer around it, as the golden cases
 * (../shared/golden/README.md) name them: a file's "moed.*" metadata gives the
 * defaults and command-line options override them, key by key, through the
 * same table (router_config_set()).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/diag.h"

enum router_kind {
	ROUTER_SWITCH,       /* Switch Transformer: softmax top-1 */
	ROUTER_GSHARD,       /* GShard top-2 (mesh-tensorflow or fairscale) */
	ROUTER_TOPK,         /* Mixtral / Qwen / DeepSeek / MegaBlocks top-k */
	ROUTER_BASE,         /* BASE layers: centroid affinity, greedy or balanced */
	ROUTER_HIERARCHICAL, /* mesh-tf transformer_moe_layer_v2: group, then expert */
	ROUTER_GIVEN,        /* the client supplies expert indices and weights */
};

enum drop_policy {
	DROP_ZERO,        /* a token whose every slot was dropped outputs 0 */
	DROP_PASSTHROUGH, /* ... outputs its input (times its top-1 prob unless unscaled) */
};

enum scale_mode {
	SCALE_OUTPUT, /* y = g * E(x) */
	SCALE_INPUT,  /* y = E(g * x) (labml is_scale_prob) */
	SCALE_NONE,   /* y = E(x) */
};

enum score_fn {
	SCORE_SOFTMAX,
	SCORE_SIGMOID,
};

enum top2_variant {
	TOP2_MESHTF,
	TOP2_FAIRSCALE,
};

enum second_policy {
	SECOND_ALL,
	SECOND_NONE,
	SECOND_THRESHOLD,
	SECOND_RANDOM, /* mesh-tf: keep the second expert with probability gate2 / threshold */
};

enum base_mode {
	BASE_GREEDY,
	BASE_BALANCED,
};

enum priority_mode {
	PRIORITY_TOKEN, /* token order, then slot order (GShard, mesh-tf, fairscale, MegaBlocks) */
	PRIORITY_SCORE, /* batch-prioritised: tokens by descending top-1 score (V-MoE) */
};

enum activation {
	ACT_RELU,
	ACT_GELU,      /* erf form */
	ACT_GELU_TANH, /* tanh approximation */
	ACT_SILU_GATED,
	ACT_GELU_GATED,
};

enum group_score {
	GROUP_SCORE_MAX,  /* DeepSeek-V2 group_limited_greedy: the best expert of the group */
	GROUP_SCORE_TOP2, /* DeepSeek-V3 noaux_tc: the sum of the group's two best */
};

enum nonfinite_policy {
	NONFINITE_FAIL,     /* the batch fails with -EDOM, the engine stays healthy */
	NONFINITE_SANITIZE, /* NaN -> 0, +-inf -> +-FLT_MAX (torch.nan_to_num, as fairseq) */
};

struct router_config {
	enum router_kind kind;
	uint32_t top_k;
	double capacity_factor; /* 0: dropless */
	uint32_t min_capacity;
	enum drop_policy drop;
	enum scale_mode scale;
	bool normalize;
	enum score_fn score;
	enum top2_variant top2_variant;
	enum second_policy second_policy;
	double second_threshold;
	uint64_t seed; /* for SECOND_RANDOM */
	enum base_mode base_mode;
	uint32_t base_sublayers;
	uint32_t groups;            /* hierarchical: X */
	uint32_t experts_per_group; /* hierarchical: Y */
	enum priority_mode priority;
	enum activation activation;
	enum nonfinite_policy nonfinite;
	/* DeepSeek's group-limited top-k: the experts form expert_groups equal
	 * groups, a token first picks its topk_groups best groups, then its
	 * top_k experts among theirs. 0 groups: off. */
	uint32_t expert_groups;
	uint32_t topk_groups;
	enum group_score group_score;
	/* DeepSeek's routed_scaling_factor: the top-k weights are multiplied by it. */
	double routed_scaling;
};

/* The defaults of the golden generator (top-1 switch-like topk, dropless, relu, ...). */
void router_config_init(struct router_config *c);

/*
 * Set one option by its metadata name without the "moed." prefix ("router",
 * "top_k", "capacity_factor", "second_policy", ...). -ENOENT for a key that is
 * not a router option (the caller decides whether to ignore it), -EINVAL with
 * a diag for a bad value.
 */
int router_config_set(struct router_config *c, const char *key, const char *value,
		      struct diag *d);

/*
 * The same for one "key=value" string (a command-line override); an unknown
 * key is -EINVAL here, with a diag.
 */
int router_config_set_pair(struct router_config *c, const char *pair, struct diag *d);

/*
 * Check the options against each other and the layer's shape (E experts):
 * top_k within 1..E (4 for hierarchical), groups * experts_per_group == E, ...
 */
int router_config_validate(const struct router_config *c, uint32_t n_experts, struct diag *d);

/* The name of option @i of the table (0, 1, ...), NULL past the last. */
const char *router_config_key(size_t i);

/* Number of slots per token in the routing result (k; 4 for hierarchical). */
uint32_t router_config_slots(const struct router_config *c);

/*
 * Does a token's routing depend on that token alone? True without capacity,
 * balanced assignment, a random second expert or client-given routing: then
 * batches may run merged, and each one's statistics are computable alone
 * (router_stats()).
 */
bool router_config_per_token(const struct router_config *c);

/* Names for printing, e.g. in moectl's output metadata. */
const char *router_kind_name(enum router_kind k);
const char *activation_name(enum activation a);

/* One line per option ("  --top_k  experts per token"), for --help. */
void router_config_print_help(FILE *out);
