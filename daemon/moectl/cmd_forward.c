/* SPDX-License-Identifier: MIT */
/*
 * moectl forward: one batch through one MoE layer with the embedded engine,
 * or, with moectl's --socket, through a running moed (cmd_forward_daemon.c).
 *
 *   moectl forward --model MODEL --input IN --output OUT [--layer L]
 *                  [--input-tensor NAME] [--threads N] [--kernel K] [router options]
 *   moectl --socket PATH forward --input IN --output OUT [--layer L] [--model M]
 *
 * IN holds the batch as tensor `input` [T][d] (a golden case file is both a
 * MODEL and an IN). With --router given, IN also holds `given.expert_index`
 * (I32 [T][k]) and `given.expert_weight` (F32 [T][k]). OUT receives output,
 * expert_index, expert_weight, tokens_per_expert, aux_loss and z_loss in the
 * format ../shared/golden/check.py reads.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "moectl.h"
#include "forward_io.h"
#include "util/log.h"
#include "util/parse.h"

#define MAX_OVERRIDES 64

struct forward_args {
	const char *model, *input, *output, *input_tensor;
	uint32_t layer, threads;
	enum matmul_kernel kernel;
	char overrides[MAX_OVERRIDES][160];
	const char *override_ptrs[MAX_OVERRIDES];
	unsigned n_overrides;
};

static void forward_usage(FILE *out)
{
	fprintf(out, "usage: moectl forward --model MODEL --input IN --output OUT [--layer L]\n"
		     "                      [--input-tensor NAME] [--threads N]\n"
		     "                      [--kernel auto|sgemv|smallm|sgemm] [router options]\n"
		     "\nrouter options (override the model's moed.* metadata):\n");
	router_config_print_help(out);
}

static int parse_forward_args(int argc, char **argv, struct forward_args *a)
{
	static const char *const kernels[] = { "auto", "sgemv", "smallm", "sgemm", NULL };

	*a = (struct forward_args){ .input_tensor = "input" };
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		int n;

		if (strcmp(opt, "--help") == 0) {
			forward_usage(stdout);
			exit(0);
		}
		if (a->n_overrides < MAX_OVERRIDES) {
			n = moectl_router_option(argc, argv, i, a->overrides[a->n_overrides],
						 sizeof(a->overrides[0]));
			if (n < 0)
				return n;
			if (n > 0) {
				a->override_ptrs[a->n_overrides] = a->overrides[a->n_overrides];
				a->n_overrides++;
				i += n - 1;
				continue;
			}
		}
		if (!val) {
			log_error("unknown option or missing value: %s", opt);
			return -EINVAL;
		}
		i++;
		if (strcmp(opt, "--model") == 0)
			a->model = val;
		else if (strcmp(opt, "--input") == 0)
			a->input = val;
		else if (strcmp(opt, "--output") == 0)
			a->output = val;
		else if (strcmp(opt, "--input-tensor") == 0)
			a->input_tensor = val;
		else if (strcmp(opt, "--layer") == 0) {
			if (parse_u32(val, 0, 1u << 20, &a->layer) < 0)
				return log_errno(-EINVAL, "--layer: '%s' is not a layer index", val);
		} else if (strcmp(opt, "--threads") == 0) {
			if (parse_u32(val, 0, 1024, &a->threads) < 0)
				return log_errno(-EINVAL, "--threads: '%s' is not 0..1024", val);
		} else if (strcmp(opt, "--kernel") == 0) {
			int k = parse_name(val, kernels);

			if (k < 0)
				return log_errno(-EINVAL, "--kernel: '%s' is not one of "
							  "auto|sgemv|smallm|sgemm",
						 val);
			a->kernel = (enum matmul_kernel)k;
		} else {
			log_error("unknown option %s (moectl forward --help)", opt);
			return -EINVAL;
		}
	}
	if (!a->input || !a->output) {
		log_error("--input and --output are required (moectl forward --help)");
		return -EINVAL;
	}
	return 0;
}

int cmd_forward(int argc, char **argv, const char *socket_path)
{
	struct forward_args a;
	struct moe_model *model = NULL;
	struct st_set *in = NULL;
	struct engine *engine = NULL;
	struct engine_opts eo;
	struct engine_batch b = { 0 };
	struct route_given given = { 0 };
	int32_t *given_expert = NULL;
	float *given_weight = NULL;
	struct diag d = { { 0 } };
	const struct moe_layer *L;
	const struct blas_info *blas;
	float *x = NULL;
	uint32_t k;
	double t0;
	int r, ret = 1;

	if (parse_forward_args(argc, argv, &a) < 0)
		return 2;
	if (socket_path) {
		if (a.n_overrides || a.threads || a.kernel != MATMUL_AUTO) {
			log_error("router options, --threads and --kernel are the daemon's "
				  "settings; they cannot be given with --socket");
			return 2;
		}
		return forward_via_daemon(socket_path, a.input, a.input_tensor, a.output, a.layer);
	}
	if (!a.model) {
		log_error("--model is required without --socket (moectl forward --help)");
		return 2;
	}
	r = moe_model_open(a.model, a.override_ptrs, a.n_overrides, &model, &d);
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		goto out;
	}
	L = moe_model_layer(model, a.layer);
	if (!L) {
		log_error("%s: layer %u is not an MoE layer (the model has %u layers)", a.model,
			  a.layer, moe_model_n_layers(model));
		goto out;
	}
	k = router_config_slots(&L->router);

	r = st_set_open(a.input, &in, &d);
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		goto out;
	}
	r = forward_read_matrix(in, a.input, a.input_tensor, false, 0, L->d_model, (void **)&x);
	if (r < 0)
		goto out;
	b.n_tokens = (uint32_t)r;
	b.x = x;
	if (L->router.kind == ROUTER_GIVEN) {
		if (forward_read_matrix(in, a.input, "given.expert_index", true, b.n_tokens, k,
				(void **)&given_expert) < 0 ||
		    forward_read_matrix(in, a.input, "given.expert_weight", false, b.n_tokens, k,
				(void **)&given_weight) < 0)
			goto out;
		given.expert = given_expert;
		given.weight = given_weight;
		b.given = &given;
	}

	b.output = malloc(sizeof(float) * b.n_tokens * L->d_model);
	b.expert_index = malloc(sizeof(int32_t) * b.n_tokens * k);
	b.expert_weight = malloc(sizeof(float) * b.n_tokens * k);
	b.tokens_per_expert = malloc(sizeof(int32_t) * L->n_experts);
	if (!b.output || !b.expert_index || !b.expert_weight || !b.tokens_per_expert) {
		log_error("out of memory for a batch of %u tokens", b.n_tokens);
		goto out;
	}

	engine_opts_init(&eo);
	eo.n_workers = a.threads;
	eo.kernel = a.kernel;
	r = engine_new(&eo, &engine, &d);
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		goto out;
	}
	blas = engine_blas_info(engine);
	log_info("%s, %d BLAS thread per worker, %u workers", blas->config, blas->threads,
		 engine_n_workers(engine));

	t0 = moectl_now_s();
	r = engine_forward(engine, L, NULL, &b, &d);
	if (r < 0) {
		log_errno(r, "layer %u: %s", a.layer, d.msg);
		goto out;
	}
	log_info("layer %u (%s, %u experts, k=%u): %u tokens, %u slots dropped, aux loss %.6g, "
		 "%.3f ms",
		 a.layer, router_kind_name(L->router.kind), L->n_experts, k, b.n_tokens,
		 b.n_dropped, b.aux_loss, (moectl_now_s() - t0) * 1e3);
	if (forward_write_result(a.output, L->d_model, L->n_experts, k, router_kind_name(L->router.kind), &b) < 0)
		goto out;
	ret = 0;
out:
	engine_free(engine);
	free(b.output);
	free(b.expert_index);
	free(b.expert_weight);
	free(b.tokens_per_expert);
	free(given_expert);
	free(given_weight);
	free(x);
	st_set_free(in);
	moe_model_free(model);
	return ret;
}
