/* SPDX-License-Identifier: MIT */
/* model_names: the name tables of the checkpoint layouts; see model_names.h. */
#include "model_names.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util/parse.h"

/*
 * Each pattern takes the layer, then the expert, then the sublayer number
 * where it has them (printf %u in that order). NULL: the layout has no such
 * tensor.
 */
static const char *const patterns[LAYOUT_COUNT][ROLE_SUB_FF2_B + 1] = {
	[LAYOUT_MOED] = {
		[ROLE_ROUTER_W] = "layers.%u.router.weight",
		[ROLE_ROUTER_B] = "layers.%u.router.bias",
		[ROLE_SELECTION_BIAS] = "layers.%u.router.selection_bias",
		[ROLE_CENTROIDS] = "layers.%u.router.centroids",
		[ROLE_OUTER_W] = "layers.%u.router.outer.weight",
		[ROLE_INNER_W] = "layers.%u.router.inner.weight",
		[ROLE_EXPERT_W1] = "layers.%u.experts.%u.w1",
		[ROLE_EXPERT_W2] = "layers.%u.experts.%u.w2",
		[ROLE_EXPERT_W3] = "layers.%u.experts.%u.w3",
		[ROLE_EXPERT_B1] = "layers.%u.experts.%u.b1",
		[ROLE_EXPERT_B2] = "layers.%u.experts.%u.b2",
		[ROLE_SHARED_W1] = "layers.%u.shared.w1",
		[ROLE_SHARED_W2] = "layers.%u.shared.w2",
		[ROLE_SHARED_W3] = "layers.%u.shared.w3",
		[ROLE_SHARED_GATE] = "layers.%u.shared.gate",
		[ROLE_SUB_NORM_W] = "layers.%u.experts.%u.sublayers.%u.norm.weight",
		[ROLE_SUB_NORM_B] = "layers.%u.experts.%u.sublayers.%u.norm.bias",
		[ROLE_SUB_FF1_W] = "layers.%u.experts.%u.sublayers.%u.ff1.weight",
		[ROLE_SUB_FF1_B] = "layers.%u.experts.%u.sublayers.%u.ff1.bias",
		[ROLE_SUB_FF2_W] = "layers.%u.experts.%u.sublayers.%u.ff2.weight",
		[ROLE_SUB_FF2_B] = "layers.%u.experts.%u.sublayers.%u.ff2.bias",
	},
	[LAYOUT_MIXTRAL] = {
		[ROLE_ROUTER_W] = "model.layers.%u.block_sparse_moe.gate.weight",
		[ROLE_EXPERT_W1] = "model.layers.%u.block_sparse_moe.experts.%u.w1.weight",
		[ROLE_EXPERT_W2] = "model.layers.%u.block_sparse_moe.experts.%u.w2.weight",
		[ROLE_EXPERT_W3] = "model.layers.%u.block_sparse_moe.experts.%u.w3.weight",
	},
	[LAYOUT_QWEN2] = {
		[ROLE_ROUTER_W] = "model.layers.%u.mlp.gate.weight",
		[ROLE_EXPERT_W1] = "model.layers.%u.mlp.experts.%u.gate_proj.weight",
		[ROLE_EXPERT_W2] = "model.layers.%u.mlp.experts.%u.down_proj.weight",
		[ROLE_EXPERT_W3] = "model.layers.%u.mlp.experts.%u.up_proj.weight",
		[ROLE_SHARED_W1] = "model.layers.%u.mlp.shared_expert.gate_proj.weight",
		[ROLE_SHARED_W2] = "model.layers.%u.mlp.shared_expert.down_proj.weight",
		[ROLE_SHARED_W3] = "model.layers.%u.mlp.shared_expert.up_proj.weight",
		[ROLE_SHARED_GATE] = "model.layers.%u.mlp.shared_expert_gate.weight",
	},
	[LAYOUT_DEEPSEEK] = {
		[ROLE_ROUTER_W] = "model.layers.%u.mlp.gate.weight",
		[ROLE_SELECTION_BIAS] = "model.layers.%u.mlp.gate.e_score_correction_bias",
		[ROLE_EXPERT_W1] = "model.layers.%u.mlp.experts.%u.gate_proj.weight",
		[ROLE_EXPERT_W2] = "model.layers.%u.mlp.experts.%u.down_proj.weight",
		[ROLE_EXPERT_W3] = "model.layers.%u.mlp.experts.%u.up_proj.weight",
		[ROLE_SHARED_W1] = "model.layers.%u.mlp.shared_experts.gate_proj.weight",
		[ROLE_SHARED_W2] = "model.layers.%u.mlp.shared_experts.down_proj.weight",
		[ROLE_SHARED_W3] = "model.layers.%u.mlp.shared_experts.up_proj.weight",
	},
};

static const char *const layout_names[LAYOUT_COUNT] = { "moed", "mixtral", "qwen2_moe",
							 "deepseek" };

const char *model_layout_name(enum model_layout layout)
{
	return (unsigned)layout < LAYOUT_COUNT ? layout_names[layout] : "?";
}

int model_tensor_name(enum model_layout layout, enum tensor_role role, uint32_t layer,
		      uint32_t expert, uint32_t sub, char *buf, size_t size)
{
	const char *pattern;
	int n;

	if ((unsigned)layout >= LAYOUT_COUNT || (unsigned)role > ROLE_SUB_FF2_B)
		return -EINVAL;
	pattern = patterns[layout][role];
	if (!pattern)
		return -ENOENT;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	n = snprintf(buf, size, pattern, layer, expert, sub);
#pragma GCC diagnostic pop
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

/* The tensors that mark a layer as MoE, per layout: "prefix<N>suffix". */
static const struct {
	enum model_layout layout;
	const char *prefix, *suffix;
} router_markers[] = {
	{ LAYOUT_MOED, "layers.", ".router.weight" },
	{ LAYOUT_MOED, "layers.", ".router.centroids" },
	{ LAYOUT_MOED, "layers.", ".router.outer.weight" },
	{ LAYOUT_MIXTRAL, "model.layers.", ".block_sparse_moe.gate.weight" },
	{ LAYOUT_QWEN2, "model.layers.", ".mlp.gate.weight" },
};

int model_name_router_layer(const char *name, enum model_layout *ret_layout, uint32_t *ret_layer)
{
	for (size_t i = 0; i < sizeof(router_markers) / sizeof(router_markers[0]); i++) {
		size_t np = strlen(router_markers[i].prefix), ns = strlen(router_markers[i].suffix);
		size_t n = strlen(name);
		char number[16];
		uint32_t layer;

		if (n <= np + ns || strncmp(name, router_markers[i].prefix, np) != 0 ||
		    strcmp(name + n - ns, router_markers[i].suffix) != 0)
			continue;
		if (n - np - ns >= sizeof(number))
			continue;
		memcpy(number, name + np, n - np - ns);
		number[n - np - ns] = '\0';
		/* "0", "12": no sign, no leading zeros, nothing but digits */
		if ((number[0] == '0' && number[1]) ||
		    parse_u32(number, 0, MODEL_LAYER_INDEX_MAX, &layer) < 0)
			continue;
		*ret_layout = router_markers[i].layout;
		*ret_layer = layer;
		return 1;
	}
	return 0;
}
