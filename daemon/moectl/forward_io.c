/* SPDX-License-Identifier: MIT */
/*
 * forward_io: the files of moectl forward, shared by its embedded and its
 * daemon-backed mode: reading a batch (and given routing) out of a
 * safetensors set, writing the result in the format golden/check.py reads.
 */
#include "forward_io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/safetensors.h"
#include "util/log.h"

/* A [rows][cols] tensor of @set converted to float32 (or int32), malloc'd. */
int forward_read_matrix(const struct st_set *set, const char *path, const char *name, bool ints,
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

int forward_write_result(const char *path, uint32_t d_model, uint32_t n_experts, uint32_t k,
			 const char *router_name, const struct engine_batch *b)
{
	const uint64_t T = b->n_tokens, E = n_experts;
	float aux = (float)b->aux_loss, z = (float)b->z_loss;
	struct st_writer *w = NULL;
	struct diag d = { { 0 } };
	char dropped[32];
	int r;

	r = st_writer_new(&w);
	if (r < 0)
		return log_errno(r, "cannot create a writer: %m");
	snprintf(dropped, sizeof(dropped), "%u", b->n_dropped);
	if ((r = st_writer_add(w, "output", ST_F32, 2, (uint64_t[]){ T, d_model }, b->output)) <
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
	    (r = st_writer_set_metadata(w, "moed.router", router_name)) < 0 ||
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

