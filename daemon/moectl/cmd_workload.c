/* SPDX-License-Identifier: MIT */
/*
 * moectl workload: drive a running moed the way a model runtime would,
 * through libmoe: a batch of token rows goes through every MoE layer in
 * turn (each layer's output is the next layer's input, as between the
 * attention blocks of a real model), again and again.
 *
 *   moectl [--socket PATH] workload [--batches N] [--tokens T] [--seed S]
 *
 * On a terminal a progress line shows batches, tokens/s and the last
 * batch's latency; at the end one summary line. Exit status 1 if any batch
 * failed.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <moe.h>

#include "moectl.h"
#include "util/log.h"
#include "util/parse.h"
#include "util/rng.h"

struct workload_args {
	uint32_t batches, tokens;
	uint64_t seed;
};

static int parse_workload_args(int argc, char **argv, struct workload_args *a)
{
	*a = (struct workload_args){ .batches = 200, .tokens = 32, .seed = 1 };
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		int r = -EINVAL;

		if (strcmp(opt, "--help") == 0) {
			printf("usage: moectl [--socket PATH] workload [--batches N] [--tokens T] "
			       "[--seed S]\n");
			exit(0);
		}
		if (!val)
			return log_errno(-EINVAL, "unknown option or missing value: %s", opt);
		i++;
		if (strcmp(opt, "--batches") == 0)
			r = parse_u32(val, 1, UINT32_MAX, &a->batches);
		else if (strcmp(opt, "--tokens") == 0)
			r = parse_u32(val, 1, 1u << 20, &a->tokens);
		else if (strcmp(opt, "--seed") == 0)
			r = parse_u64(val, 0, UINT64_MAX, &a->seed);
		if (r < 0)
			return log_errno(r, "%s: bad option or value '%s'", opt, val);
	}
	return 0;
}

/* Fresh activations of unit scale, as a normalised hidden state would be. */
static void fill_input(float *x, size_t n, uint64_t *rng)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(2.0 * rng_uniform01(rng) - 1.0);
}

/* One batch through every layer: a ping-pong between two arena buffers. */
static int run_batch(struct moe_client *c, const struct moe_model_info *mi, uint32_t T,
		     float *buf[2], uint64_t *n_dropped)
{
	struct moe_completion done;
	struct moe_request rq;
	int r;

	for (uint32_t l = 0; l < mi->n_layers; l++) {
		moe_request_init(&rq);
		rq.user_data = l;
		rq.layer = l;
		rq.n_tokens = T;
		rq.input = buf[l & 1];
		rq.output = buf[(l + 1) & 1];
		r = moe_forward(c, &rq, &done);
		if (r < 0)
			return r;
		if (done.status < 0)
			return done.status;
		*n_dropped += done.n_dropped;
	}
	return 0;
}

int cmd_workload(int argc, char **argv, const char *socket_path)
{
	struct workload_args a;
	struct moe_client_opts o;
	struct moe_client *c = NULL;
	struct moe_model_info mi = { .size = sizeof(mi) };
	float *buf[2] = { NULL, NULL };
	uint64_t rng, dropped = 0;
	bool tty = isatty(STDOUT_FILENO);
	double t0, t_last = 0, lat_max = 0;
	size_t bytes;
	int r, ret = 1;

	if (parse_workload_args(argc, argv, &a) < 0)
		return 2;
	moe_client_opts_init(&o);
	o.socket_path = socket_path;
	o.name = "moectl-workload";
	r = moe_connect(&o, &c);
	if (r < 0) {
		log_error("cannot connect to moed at %s: %s",
			  socket_path ? socket_path : "the default socket", moe_strerror(r));
		return 1;
	}
	moe_model_info_get(c, &mi);
	bytes = (size_t)a.tokens * mi.d_model * sizeof(float);
	if (a.tokens > mi.max_tokens || moe_buf_alloc(c, bytes, (void **)&buf[0]) < 0 ||
	    moe_buf_alloc(c, bytes, (void **)&buf[1]) < 0) {
		log_error("%u tokens do not fit this connection (arena %llu bytes, %u tokens per "
			  "batch)",
			  a.tokens, (unsigned long long)mi.arena_size, mi.max_tokens);
		goto out;
	}
	rng = a.seed;
	printf("workload: %u batches of %u tokens through %u layers of %s (d_model %u)\n",
	       a.batches, a.tokens, mi.n_layers, mi.model_name, mi.d_model);
	t0 = moectl_now_s();
	for (uint32_t i = 0; i < a.batches; i++) {
		double tb = moectl_now_s(), lat;

		fill_input(buf[0], (size_t)a.tokens * mi.d_model, &rng);
		r = run_batch(c, &mi, a.tokens, buf, &dropped);
		if (r < 0) {
			if (tty)
				printf("\n");
			log_error("batch %u failed: %s", i, moe_strerror(r));
			goto out;
		}
		lat = moectl_now_s() - tb;
		if (lat > lat_max)
			lat_max = lat;
		if (tty && (moectl_now_s() - t_last > 0.1 || i + 1 == a.batches)) {
			double el = moectl_now_s() - t0;

			printf("\r  %u/%u batches, %.0f tokens/s, last batch %.2f ms   ", i + 1,
			       a.batches, (double)(i + 1) * a.tokens / el, lat * 1e3);
			fflush(stdout);
			t_last = moectl_now_s();
		}
	}
	if (tty)
		printf("\n");
	printf("workload: %u batches, %llu tokens in %.2f s: %.0f tokens/s, worst batch %.2f ms, "
	       "%llu slots dropped\n",
	       a.batches, (unsigned long long)a.batches * a.tokens, moectl_now_s() - t0,
	       (double)a.batches * a.tokens / (moectl_now_s() - t0), lat_max * 1e3,
	       (unsigned long long)dropped);
	ret = 0;
out:
	if (c) {
		moe_buf_free(c, buf[0]);
		moe_buf_free(c, buf[1]);
	}
	moe_close(c);
	return ret;
}
