/* SPDX-License-Identifier: MIT */
/*
 * model: the MoE layers of a checkpoint, ready to compute.
 *
 * A model is opened from a tensor set (model/safetensors.h: one file, a
 * sharded index or a folder). Each layer that has an MoE block becomes a
 * struct moe_layer: the router's weights, the experts' weights (FFN
 * matrices in the checkpoint's dtype, F32, BF16 or F16, used in place inside
 * the read-only mapping when aligned; everything else as float32, converted
 * once at load when the file has another dtype), and the router settings from the
 * file's "moed.*" metadata (or, for a Hugging Face checkpoint without it, from
 * the layout's conventions and its config.json), which options may override.
 *
 * Tensor names: the moed-native layout of the golden cases
 * (layers.N.router.weight, layers.N.experts.E.w1 ...), Mixtral
 * (model.layers.N.block_sparse_moe.gate.weight, .experts.E.w1/w2/w3.weight),
 * Qwen2-MoE and DeepSeek (model.layers.N.mlp.gate.weight,
 * .mlp.experts.E.gate_proj/up_proj/down_proj.weight, shared experts).
 *
 * Thread-safety: an opened model is immutable; layers may be used by any
 * number of engines at once.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "compute/weight_dtype.h"
#include "model/half.h"
#include "model/safetensors.h"
#include "router/router_config.h"
#include "util/diag.h"

/*
 * One FFN: y = W2 · act(W1·x + b1 [, W3·x]) + b2, PyTorch out×in layout.
 * The three matrices keep the checkpoint's dtype, one for all three (F32,
 * BF16 or F16: a half-precision expert takes half the memory and decode
 * reads half the bytes; the kernels widen in registers). Biases are F32.
 */
struct ffn_weights {
	const void *w1; /* [ff][d] */
	const void *w2; /* [d][ff] */
	const void *w3; /* [ff][d], gated activations only */
	enum weight_dtype dtype; /* of w1, w2, w3 */
	const float *b1; /* [ff] or NULL */
	const float *b2; /* [d] or NULL */
	uint32_t d_ff;
};

/*
 * Element @i of @f's matrix @w (its w1, w2 or w3) as float32: for references
 * and checks; the kernels widen whole vectors in registers.
 */
static inline float ffn_weight_at(const struct ffn_weights *f, const void *w, size_t i)
{
	switch (f->dtype) {
	case WEIGHT_BF16:
		return bf16_to_f32(((const uint16_t *)w)[i]);
	case WEIGHT_F16:
		return f16_to_f32(((const uint16_t *)w)[i]);
	default:
		return ((const float *)w)[i];
	}
}

/* A BASE expert sublayer: x + ff2(relu(ff1(LayerNorm(x)))). */
struct base_sublayer {
	const float *norm_w, *norm_b; /* [d] */
	const float *ff1_w, *ff1_b;   /* [ff][d], [ff] */
	const float *ff2_w, *ff2_b;   /* [d][ff], [d] */
};

struct moe_expert {
	struct ffn_weights ffn;           /* FFN experts */
	struct base_sublayer *sublayers;  /* BASE experts: base_sublayers entries */
};

/*
 * Whether this process holds no weights for @e: another host computes it
 * (expert_hosts; the expert store leaves it out, so its matrices are NULL,
 * its shape and dtype still the checkpoint's). Nothing may compute it here.
 */
static inline bool moe_expert_held_elsewhere(const struct moe_expert *e)
{
	return !e->sublayers && !e->ffn.w1 && !e->ffn.w2;
}

struct moe_layer {
	uint32_t index;
	uint32_t d_model;
	uint32_t d_ff;
	uint32_t n_experts;
	struct router_config router;

	const float *router_w;  /* [E][d] */
	const float *router_b;  /* [E] or NULL */
	const float *selection_bias; /* [E] or NULL: DeepSeek-V3's e_score_correction_bias */
	const float *centroids; /* BASE: [E][d] */
	const float *outer_w;   /* hierarchical: [X][d] */
	const float *inner_w;   /* hierarchical: [X][Y][d] */
	struct moe_expert *experts;

	/* Shared experts (Qwen2-MoE, DeepSeek): every token, weight 1 or σ(x·gate). */
	bool has_shared;
	struct ffn_weights shared;
	const float *shared_gate; /* [d] or NULL */
};

/*
 * Bounds on what a checkpoint may declare, far above real models and low
 * enough that every size the engine derives from them (rows x width in
 * bytes, tile counts, BLAS's int dimensions) stays in range.
 */
#define MODEL_MAX_WIDTH (1u << 24)   /* d_model, d_ff */
#define MODEL_MAX_EXPERTS (1u << 16) /* per layer */
#define MODEL_MAX_LAYERS (1u << 16)

struct moe_model;

/*
 * Open the checkpoint at @path and prepare its MoE layers. @overrides (may be
 * NULL) are router options given as "key=value" strings applied after the
 * file's metadata, in order; @n_overrides of them.
 */
int moe_model_open(const char *path, const char *const *overrides, unsigned n_overrides,
		   struct moe_model **ret_model, struct diag *d);
struct moe_model *moe_model_free(struct moe_model *m);

/*
 * How the model gets a weight's data: data() is called once per weight
 * tensor the model uses, after its shape was checked, with the layer and the
 * routed expert it belongs to (-1: the layer's router, centroids or shared
 * experts) and the dtype the model wants it in: ST_F32, or the tensor's own
 * BF16/F16 for an FFN matrix kept in its dtype. It sets *ret to
 * [t->n_elements] values of that dtype that stay valid as long as the model,
 * or returns -errno with @d filled. Without a hook, tensors already in the
 * wanted dtype are used in place and others converted into memory the model
 * owns.
 */
struct model_tensor_hook {
	int (*data)(void *ctx, const struct st_tensor *t, uint32_t layer, int64_t expert,
		    enum st_dtype as, const void **ret, struct diag *d);
	void *ctx;
};

struct model_opts {
	/* router options as "key=value", applied after the file's metadata, in order */
	const char *const *overrides;
	unsigned n_overrides;
	const struct model_tensor_hook *hook; /* NULL: the data in place or converted */
	/* FFN matrices as float32 even where the checkpoint has BF16/F16
	 * (expert_dtype = f32: for kernels slower on half precision) */
	bool widen_experts;
};

/*
 * The same as moe_model_open() over an opened tensor set, which the model
 * takes (freed with it, or at once on failure); @path names it in messages.
 * @opts may be NULL (no overrides, no hook, dtypes kept).
 */
int moe_model_open_set(struct st_set *set, const char *path, const struct model_opts *opts,
		       struct moe_model **ret_model, struct diag *d);

/* Number of layer slots (the highest layer index + 1). */
uint32_t moe_model_n_layers(const struct moe_model *m);
/* The MoE layer of index @layer, or NULL when that layer has no MoE block. */
const struct moe_layer *moe_model_layer(const struct moe_model *m, uint32_t layer);
/* The tensors behind the model (for inputs kept in the same file). */
const struct st_set *moe_model_tensors(const struct moe_model *m);
/* "moed", "mixtral", "qwen2_moe" or "deepseek". */
const char *moe_model_layout(const struct moe_model *m);
