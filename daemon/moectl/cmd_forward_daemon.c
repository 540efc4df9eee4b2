/* SPDX-License-Identifier: MIT */
/*
 * moectl --socket PATH forward: the same batch files as the embedded mode,
 * but the batch runs in a moed through libmoe: the input rows go into the
 * client's arena, one request with routing and counts returned, and the
 * result is written exactly as the embedded mode writes it (so
 * golden/check.py can compare the two paths).
 *
 * The model is the daemon's: --model is accepted for the same command lines
 * and not read, and router options cannot be given (they are the daemon's).
 * A file with `given.expert_index` / `given.expert_weight` sends them as the
 * batch's routing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moe.h>

#include "forward_io.h"
#include "moectl.h"
#include "util/log.h"

struct daemon_bufs {
	float *x, *y, *weight;
	int32_t *expert, *counts;
};

static void daemon_bufs_free(struct moe_client *c, struct daemon_bufs *b)
{
	moe_buf_free(c, b->x);
	moe_buf_free(c, b->y);
	moe_buf_free(c, b->weight);
	moe_buf_free(c, b->expert);
	moe_buf_free(c, b->counts);
}

static int daemon_bufs_alloc(struct moe_client *c, const struct moe_model_info *mi, uint32_t T,
			     uint32_t k, struct daemon_bufs *b)
{
	size_t rows = (size_t)T * mi->d_model * sizeof(float), route = (size_t)T * k * 4;

	if (moe_buf_alloc(c, rows, (void **)&b->x) < 0 || moe_buf_alloc(c, rows, (void **)&b->y) < 0 ||
	    moe_buf_alloc(c, route, (void **)&b->expert) < 0 ||
	    moe_buf_alloc(c, route, (void **)&b->weight) < 0 ||
	    moe_buf_alloc(c, (size_t)mi->max_experts * 4, (void **)&b->counts) < 0)
		return -ENOMEM;
	return 0;
}

int forward_via_daemon(const char *socket_path, const char *input, const char *input_tensor,
		       const char *output, uint32_t layer)
{
	struct moe_client_opts o;
	struct moe_client *c = NULL;
	struct moe_model_info mi = { .size = sizeof(mi) };
	struct daemon_bufs bufs = { 0 };
	struct moe_request rq;
	struct moe_completion done;
	struct engine_batch b = { 0 };
	struct st_set *in = NULL;
	struct diag d = { { 0 } };
	float *x = NULL, *gw = NULL;
	int32_t *ge = NULL;
	uint32_t T, k;
	bool given;
	int r, ret = 1;

	r = st_set_open(input, &in, &d);
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		return 1;
	}
	moe_client_opts_init(&o);
	o.socket_path = socket_path;
	o.name = "moectl-forward";
	r = moe_connect(&o, &c);
	if (r < 0) {
		log_error("cannot connect to moed at %s: %s", socket_path, moe_strerror(r));
		goto out;
	}
	moe_model_info_get(c, &mi);
	r = forward_read_matrix(in, input, input_tensor, false, 0, mi.d_model, (void **)&x);
	if (r < 0)
		goto out;
	T = (uint32_t)r;
	given = st_set_find(in, "given.expert_index") != NULL;
	k = mi.max_slots;
	if (given) {
		const struct st_tensor *t = st_set_find(in, "given.expert_index");

		k = t->ndim == 2 ? (uint32_t)t->shape[1] : 0;
		if (forward_read_matrix(in, input, "given.expert_index", true, T, k, (void **)&ge) < 0 ||
		    forward_read_matrix(in, input, "given.expert_weight", false, T, k, (void **)&gw) < 0)
			goto out;
	}
	if (daemon_bufs_alloc(c, &mi, T, k, &bufs) < 0) {
		log_error("a batch of %u tokens does not fit the arena (%llu bytes)", T,
			  (unsigned long long)mi.arena_size);
		goto out;
	}
	memcpy(bufs.x, x, (size_t)T * mi.d_model * sizeof(float));
	moe_request_init(&rq);
	rq.layer = layer;
	rq.n_tokens = T;
	rq.input = bufs.x;
	rq.output = bufs.y;
	rq.route_k = k;
	rq.route_expert = bufs.expert;
	rq.route_weight = bufs.weight;
	rq.expert_counts = bufs.counts;
	rq.flags = MOE_REQ_COUNTS_RETURN | (given ? MOE_REQ_ROUTE_GIVEN : MOE_REQ_ROUTE_RETURN);
	if (given) {
		memcpy(bufs.expert, ge, (size_t)T * k * 4);
		memcpy(bufs.weight, gw, (size_t)T * k * 4);
	}
	r = moe_forward(c, &rq, &done);
	if (r < 0) {
		log_error("request failed: %s", moe_strerror(r));
		goto out;
	}
	if (done.status < 0) {
		log_error("layer %u: the daemon failed the batch: %s (its log says why)", layer,
			  moe_strerror(done.status));
		goto out;
	}
	log_info("layer %u via moed: %u tokens, %u slots dropped, aux loss %.6g", layer, T,
		 done.n_dropped, (double)done.aux_loss);
	b = (struct engine_batch){ .n_tokens = T, .output = bufs.y, .expert_index = bufs.expert,
				   .expert_weight = bufs.weight, .tokens_per_expert = bufs.counts,
				   .n_dropped = done.n_dropped, .aux_loss = done.aux_loss,
				   .z_loss = done.z_loss,
				   .has_z_loss = (done.flags & MOE_COMPLETION_Z_LOSS) != 0 };
	if (forward_write_result(output, mi.d_model, mi.max_experts, k,
				 given ? "given" : "daemon", &b) < 0)
		goto out;
	ret = 0;
out:
	if (c)
		daemon_bufs_free(c, &bufs);
	moe_close(c);
	free(x);
	free(ge);
	free(gw);
	st_set_free(in);
	return ret;
}
