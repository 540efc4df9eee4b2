/* SPDX-License-Identifier: MIT */
/*
 * moectl gen-model: write a seeded synthetic MoE model (model/synth_model.h).
 *
 *   moectl gen-model --output PATH [--layout moed|mixtral|qwen2_moe|deepseek]
 *       [--dtype f32|bf16|f16] [--d-model D] [--d-ff F] [--experts E]
 *       [--layers L] [--tokens T] [--shards N] [--shared-d-ff F] [--bias]
 *       [--seed S] [router options: --router topk --top-k 2 --activation ...]
 *
 * Without options it writes the default model that moed embeds: 8 experts,
 * top-2, SiLU-gated, d_model 256, d_ff 512, 2 layers, Mixtral names.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/synth_model.h"
#include "moectl.h"
#include "router/router_config.h"
#include "util/log.h"
#include "util/parse.h"

static void gen_usage(FILE *out)
{
	fprintf(out,
		"usage: moectl gen-model --output PATH [--layout moed|mixtral|qwen2_moe|deepseek]\n"
		"         [--dtype f32|bf16|f16] [--d-model D] [--d-ff F] [--experts E]\n"
		"         [--layers L] [--tokens T] [--shards N] [--shared-d-ff F] [--bias]\n"
		"         [--seed S] [router options]\n"
		"\nrouter options (stored as moed.* metadata):\n");
	router_config_print_help(out);
}

#define MAX_SETTINGS SYNTH_MAX_SETTINGS

int cmd_gen_model(int argc, char **argv)
{
	static const char *const layouts[] = { "moed", "mixtral", "qwen2_moe", "deepseek", NULL };
	static const char *const dtypes[] = { "f32", "bf16", "f16", NULL };
	static const enum st_dtype dtype_of[] = { ST_F32, ST_BF16, ST_F16 };
	char settings[MAX_SETTINGS][160];
	bool has_router = false, has_k = false, has_act = false;
	struct synth_opts o;
	struct diag d = { { 0 } };
	uint64_t seed;
	int r;

	synth_opts_init(&o);
	/* the embedded default: a small Mixtral-shaped model */
	o.layout = LAYOUT_MIXTRAL;
	o.n_layers = 2;
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		int n, v;

		if (strcmp(opt, "--help") == 0) {
			gen_usage(stdout);
			return 0;
		}
		if (strcmp(opt, "--bias") == 0) {
			o.bias = 1;
			continue;
		}
		if (o.n_settings < MAX_SETTINGS) {
			n = moectl_router_option(argc, argv, i, settings[o.n_settings],
						 sizeof(settings[0]));
			if (n < 0)
				return 2;
			if (n > 0) {
				has_router |= strncmp(settings[o.n_settings], "router=", 7) == 0;
				has_k |= strncmp(settings[o.n_settings], "top_k=", 6) == 0;
				has_act |= strncmp(settings[o.n_settings], "activation=", 11) == 0;
				o.settings[o.n_settings] = settings[o.n_settings];
				o.n_settings++;
				i += n - 1;
				continue;
			}
		}
		if (!val) {
			log_error("unknown option or missing value: %s (moectl gen-model --help)",
				  opt);
			return 2;
		}
		i++;
		r = 0;
		if (strcmp(opt, "--output") == 0)
			o.output = val;
		else if (strcmp(opt, "--layout") == 0)
			r = (v = parse_name(val, layouts)) < 0 ? v : (o.layout = v, 0);
		else if (strcmp(opt, "--dtype") == 0)
			r = (v = parse_name(val, dtypes)) < 0 ? v : (o.dtype = dtype_of[v], 0);
		else if (strcmp(opt, "--d-model") == 0)
			r = parse_u32(val, 1, 1u << 16, &o.d_model);
		else if (strcmp(opt, "--d-ff") == 0)
			r = parse_u32(val, 1, 1u << 18, &o.d_ff);
		else if (strcmp(opt, "--experts") == 0)
			r = parse_u32(val, 1, 4096, &o.n_experts);
		else if (strcmp(opt, "--layers") == 0)
			r = parse_u32(val, 1, 1024, &o.n_layers);
		else if (strcmp(opt, "--tokens") == 0)
			r = parse_u32(val, 0, 1u << 20, &o.tokens);
		else if (strcmp(opt, "--shards") == 0)
			r = parse_u32(val, 1, 1024, &o.shards);
		else if (strcmp(opt, "--shared-d-ff") == 0)
			r = parse_u32(val, 0, 1u << 18, &o.shared_d_ff);
		else if (strcmp(opt, "--seed") == 0)
			r = (r = parse_u64(val, 0, UINT64_MAX, &seed)) < 0 ? r : (o.seed = seed, 0);
		else {
			log_error("unknown option %s (moectl gen-model --help)", opt);
			return 2;
		}
		if (r < 0) {
			log_error("%s: bad value '%s'", opt, val);
			return 2;
		}
	}
	if (!o.output) {
		log_error("--output is required (moectl gen-model --help)");
		return 2;
	}
	/* Mixtral's conventions unless told otherwise: top-2, SiLU-gated, renormalised */
	if (!has_router && o.n_settings < MAX_SETTINGS)
		o.settings[o.n_settings++] = "router=topk";
	if (!has_k && !has_router && o.n_settings < MAX_SETTINGS)
		o.settings[o.n_settings++] = "top_k=2";
	if (!has_act && o.n_settings < MAX_SETTINGS)
		o.settings[o.n_settings++] = o.layout == LAYOUT_MOED && has_router
						     ? "activation=relu"
						     : "activation=silu_gated";
	if (!has_router && o.n_settings < MAX_SETTINGS)
		o.settings[o.n_settings++] = "normalize=true";
	r = synth_model_write(&o, &d);
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		return 1;
	}
	log_info("wrote %s (%s, %u layers, %u experts, d_model %u, d_ff %u, %u input tokens)",
		 o.output, model_layout_name(o.layout), o.n_layers, o.n_experts, o.d_model, o.d_ff,
		 o.tokens);
	return 0;
}
