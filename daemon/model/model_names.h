/* SPDX-License-Identifier: MIT */
/*
 * model_names: where each weight of an MoE layer sits in the tensor names of
 * the checkpoint layouts moed reads. One table per layout; a layout that has
 * no such tensor (Mixtral has no router bias) returns -ENOENT.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

enum model_layout {
	LAYOUT_MOED,     /* layers.N.router.weight, layers.N.experts.E.w1 ... (golden cases) */
	LAYOUT_MIXTRAL,  /* model.layers.N.block_sparse_moe.{gate,experts.E.w1/w2/w3}.weight */
	LAYOUT_QWEN2,    /* model.layers.N.mlp.{gate,experts.E.{gate,up,down}_proj}.weight, */
			 /*   mlp.shared_expert.*, mlp.shared_expert_gate.weight */
	LAYOUT_DEEPSEEK, /* as Qwen2-MoE, shared experts as mlp.shared_experts.* */
	LAYOUT_COUNT,
};

enum tensor_role {
	ROLE_ROUTER_W,
	ROLE_ROUTER_B,
	ROLE_SELECTION_BIAS,
	ROLE_CENTROIDS,
	ROLE_OUTER_W,
	ROLE_INNER_W,
	ROLE_EXPERT_W1, /* gate_proj in HF gated layouts */
	ROLE_EXPERT_W2, /* down_proj */
	ROLE_EXPERT_W3, /* up_proj */
	ROLE_EXPERT_B1,
	ROLE_EXPERT_B2,
	ROLE_SHARED_W1,
	ROLE_SHARED_W2,
	ROLE_SHARED_W3,
	ROLE_SHARED_GATE,
	ROLE_SUB_NORM_W, /* BASE: experts.E.sublayers.S.norm.weight ... */
	ROLE_SUB_NORM_B,
	ROLE_SUB_FF1_W,
	ROLE_SUB_FF1_B,
	ROLE_SUB_FF2_W,
	ROLE_SUB_FF2_B,
};

/* The largest layer index a tensor name may carry (model.h's MODEL_MAX_LAYERS - 1). */
#define MODEL_LAYER_INDEX_MAX ((1u << 16) - 1)

const char *model_layout_name(enum model_layout layout);

/*
 * Write the name of @role of layer @layer (expert @expert, sublayer @sub
 * where they apply) in @layout into buf. -ENOENT when the layout has no such
 * tensor, -ENAMETOOLONG when buf is too small.
 */
int model_tensor_name(enum model_layout layout, enum tensor_role role, uint32_t layer,
		      uint32_t expert, uint32_t sub, char *buf, size_t size);

/*
 * If @name is the router tensor of some layer in some layout (the tensor
 * that marks a layer as MoE), set *ret_layout and *ret_layer and return 1;
 * return 0 otherwise.
 */
int model_name_router_layer(const char *name, enum model_layout *ret_layout, uint32_t *ret_layer);
