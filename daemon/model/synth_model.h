/* SPDX-License-Identifier: MIT */
/*
 * synth_model: a synthetic MoE model, written as a real checkpoint would be
 * (moed-native, Mixtral, Qwen2-MoE or DeepSeek names; F32, BF16 or F16; one
 * file or shards with an index), with the router settings in its "moed.*"
 * metadata and an input batch `input` [T][d] beside the weights, so the file
 * is both a MODEL and an IN for `moectl forward`. Weights are seeded normal
 * values scaled by 1/sqrt(fan-in), as PyTorch initialises Linear layers, so
 * activations keep their scale through the layer.
 */
#pragma once

#include <stdint.h>

#include "model/model_names.h"
#include "model/safetensors.h"
#include "util/diag.h"

#define SYNTH_MAX_SETTINGS 32

struct synth_opts {
	const char *output; /* a .safetensors path, or a folder when shards > 1 */
	enum model_layout layout;
	enum st_dtype dtype; /* F32, BF16 or F16 */
	uint32_t d_model, d_ff, n_experts, n_layers, tokens, shards;
	uint32_t shared_d_ff; /* 0: no shared expert */
	uint32_t base_sublayers;
	uint32_t groups, experts_per_group;
	int bias;
	uint64_t seed;
	/* router settings "key=value" (router, top_k, activation, ...) */
	const char *settings[SYNTH_MAX_SETTINGS];
	unsigned n_settings;
};

void synth_opts_init(struct synth_opts *o);
/*
 * The default model moed embeds (and `moectl gen-model` writes without
 * options): 8 experts, top-2 renormalised, SiLU-gated, d_model 256, d_ff 512,
 * 2 layers, Mixtral names. The caller sets output (and may change tokens).
 */
void synth_opts_default_model(struct synth_opts *o);
int synth_model_write(const struct synth_opts *o, struct diag *d);
