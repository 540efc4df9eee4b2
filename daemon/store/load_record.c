/* SPDX-License-Identifier: MIT */
/* load_record: measured expert load across restarts; see load_record.h. */
#include "store/load_record.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOAD_RECORD_VERSION 1

static json_t *record_json(const struct layer_stats *stats, uint32_t n_layers)
{
	json_t *layers = json_array();

	for (uint32_t l = 0; layers && l < n_layers; l++) {
		json_t *row = stats[l].tokens_per_expert ? json_array() : json_null();

		for (uint32_t e = 0; row && json_is_array(row) && e < stats[l].n_experts; e++)
			json_array_append_new(row, json_integer((json_int_t)stats[l].tokens_per_expert[e]));
		if (!row || json_array_append_new(layers, row) < 0) {
			json_decref(layers);
			return NULL;
		}
	}
	return json_pack("{s:i, s:o*}", "version", LOAD_RECORD_VERSION, "layers", layers);
}

int load_record_write(const char *path, const struct layer_stats *stats, uint32_t n_layers,
		      struct diag *d)
{
	char tmp[4096];
	json_t *root = record_json(stats, n_layers);
	int r = 0;

	if (!root)
		return diag_set(d, -ENOMEM, "out of memory");
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
		json_decref(root);
		return diag_set(d, -ENAMETOOLONG, "%s: path too long", path);
	}
	if (json_dump_file(root, tmp, JSON_COMPACT) < 0)
		r = diag_set(d, -EIO, "%s: cannot write", tmp);
	else if (rename(tmp, path) < 0)
		r = diag_set(d, -errno, "%s: cannot rename to %s: %m", tmp, path);
	if (r < 0)
		unlink(tmp);
	json_decref(root);
	return r;
}

double **load_record_free(double **load, uint32_t n_layers)
{
	for (uint32_t l = 0; load && l < n_layers; l++)
		free(load[l]);
	free(load);
	return NULL;
}

/* Row @l of the record into load[l]; -EINVAL when it does not fit the model. */
static int row_read(const json_t *row, uint32_t l, uint32_t n_experts, double **load,
		    struct diag *d)
{
	const json_t *v;
	size_t e;

	if (!n_experts)
		return json_is_null(row) ? 0 : diag_set(d, -EINVAL, "layer %u has no experts", l);
	if (!json_is_array(row) || json_array_size(row) != n_experts)
		return diag_set(d, -EINVAL, "layer %u: not %u counts", l, n_experts);
	load[l] = calloc(n_experts, sizeof(**load));
	if (!load[l])
		return diag_set(d, -ENOMEM, "out of memory");
	json_array_foreach(row, e, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return diag_set(d, -EINVAL, "layer %u expert %zu: not a count", l, e);
		load[l][e] = (double)json_integer_value(v);
	}
	return 0;
}

int load_record_read(const char *path, uint32_t n_layers, const uint32_t *n_experts,
		     double ***ret_load, struct diag *d)
{
	json_error_t err;
	json_t *root, *layers;
	double **load = NULL;
	int r = 0;

	if (access(path, F_OK) < 0)
		return -errno;
	root = json_load_file(path, 0, &err);
	if (!root)
		return diag_set(d, -EINVAL, "%s:%d: %s", path, err.line, err.text);
	layers = json_object_get(root, "layers");
	if (json_integer_value(json_object_get(root, "version")) != LOAD_RECORD_VERSION ||
	    !json_is_array(layers) || json_array_size(layers) != n_layers) {
		r = diag_set(d, -EINVAL, "%s: not a load record of a %u-layer model", path, n_layers);
		goto out;
	}
	load = calloc(n_layers ?: 1, sizeof(*load));
	if (!load) {
		r = diag_set(d, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t l = 0; r == 0 && l < n_layers; l++)
		r = row_read(json_array_get(layers, l), l, n_experts[l], load, d);
	if (r == 0) {
		*ret_load = load;
		load = NULL;
	}
out:
	load_record_free(load, n_layers);
	json_decref(root);
	return r;
}
