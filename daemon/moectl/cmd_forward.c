/* SPDX-License-Identifier: MIT */
/*
 * moectl forward: one batch through one MoE layer with the embedded engine.
 *
 *   moectl forward --model MODEL --input IN --output OUT [--layer L]
 *                  [--input-tensor NAME] [--threads N] [--kernel K] [router options]
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
#include <time.h>

#include "engine/engine.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "moectl.h"
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
	if (!a->model || !a->input || !a->output) {
		log_error("--model, --input and --output are required (moectl forward --help)");
		return -EINVAL;
	}
	return 0;
}

/* A [rows][cols] tensor of @set converted to float32 (or int32), malloc'd. */
static int read_matrix(const struct st_set *set, const char *path, const char *name, bool ints,
		       uint64_t rows, uint64_t cols, void **ret)
{
	const struct st_tensor *t = st_set_find(set, name);
	struct diag d = { { 0 } };
	void *buf;
	int r;

	if (!t)
		return log_errno(-EINVAL, "%s: no tensor '%s'", path, name);
	if (t->ndim != 2 || (rows && t->shape[0] != rows) || t->shape[1] != cols ||
	    t->shape[0] == 0 || t->shape[0] > ENGINE_MAX_TOKENS)
		return log_errno(-EINVAL, "%s: tensor '%s' must be [%s][%llu] with 1..%u rows",
				 path, name, rows ? "T" : "tokens", (unsigned long long)cols,
				 ENGINE_MAX_TOKENS);
	buf = malloc(t->n_elements * 4);
	if (!buf)
		return log_errno(-ENOMEM, "out of memory reading '%s'", name);
	r = ints ? st_tensor_to_i32(t, buf, &d) : st_tensor_to_f32(t, buf, &d);
	if (r < 0) {
		free(buf);
		return log_errno(r, "%s: %s", path, d.msg);
	}
	*ret = buf;
	return (int)t->shape[0];
}

static int write_result(const char *path, const struct moe_layer *L,
			const struct router_config *cfg, const struct engine_batch *b, uint32_t k)
{
	const uint64_t T = b->n_tokens, E = L->n_experts;
	float aux = (float)b->aux_loss, z = (float)b->z_loss;
	struct st_writer *w = NULL;
	struct diag d = { { 0 } };
	char dropped[32];
	int r;

	r = st_writer_new(&w);
	if (r < 0)
		return log_errno(r, "cannot create a writer: %m");
	snprintf(dropped, sizeof(dropped), "%u", b->n_dropped);
	if ((r = st_writer_add(w, "output", ST_F32, 2, (uint64_t[]){ T, L->d_model }, b->output)) <
		    0 ||
	    (r = st_writer_add(w, "expert_index", ST_I32, 2, (uint64_t[]){ T, k },
			       b->expert_index)) < 0 ||
	    (r = st_writer_add(w, "expert_weight", ST_F32, 2, (uint64_t[]){ T, k },
			       b->expert_weight)) < 0 ||
	    (r = st_writer_add(w, "tokens_per_expert", ST_I32, 1, (uint64_t[]){ E },
			       b->tokens_per_expert)) < 0 ||
	    (r = st_writer_add(w, "aux_loss", ST_F32, 1, (uint64_t[]){ 1 }, &aux)) < 0 ||
	    (b->has_z_loss &&
	     (r = st_writer_add(w, "z_loss", ST_F32, 1, (uint64_t[]){ 1 }, &z)) < 0) ||
	    (r = st_writer_set_metadata(w, "moed.router", router_kind_name(cfg->kind))) < 0 ||
	    (r = st_writer_set_metadata(w, "moed.dropped_slots", dropped)) < 0) {
		st_writer_free(w);
		return log_errno(r, "cannot assemble the result: %m");
	}
	r = st_writer_write(w, path, &d);
	st_writer_free(w);
	if (r < 0)
		return log_errno(r, "%s", d.msg);
	return 0;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cmd_forward(int argc, char **argv)
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
	r = read_matrix(in, a.input, a.input_tensor, false, 0, L->d_model, (void **)&x);
	if (r < 0)
		goto out;
	b.n_tokens = (uint32_t)r;
	b.x = x;
	if (L->router.kind == ROUTER_GIVEN) {
		if (read_matrix(in, a.input, "given.expert_index", true, b.n_tokens, k,
				(void **)&given_expert) < 0 ||
		    read_matrix(in, a.input, "given.expert_weight", false, b.n_tokens, k,
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

	t0 = now_seconds();
	r = engine_forward(engine, L, NULL, &b, &d);
	if (r < 0) {
		log_errno(r, "layer %u: %s", a.layer, d.msg);
		goto out;
	}
	log_info("layer %u (%s, %u experts, k=%u): %u tokens, %u slots dropped, aux loss %.6g, "
		 "%.3f ms",
		 a.layer, router_kind_name(L->router.kind), L->n_experts, k, b.n_tokens,
		 b.n_dropped, b.aux_loss, (now_seconds() - t0) * 1e3);
	if (write_result(a.output, L, &L->router, &b, k) < 0)
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
