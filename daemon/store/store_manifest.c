/* SPDX-License-Identifier: MIT */
/* store_manifest: the expert store's description as JSON; see store_manifest.h. */
#include "store/store_manifest.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "store/store_object.h"

static json_t *tensor_to_json(const struct manifest_tensor *t)
{
	json_t *shape = json_array(), *copies = json_array();

	for (unsigned i = 0; i < t->ndim; i++)
		json_array_append_new(shape, json_integer((json_int_t)t->shape[i]));
	for (uint32_t i = 0; i < t->n_copies; i++)
		json_array_append_new(copies, json_pack("[I,I]", (json_int_t)t->copy[i].node,
							(json_int_t)t->copy[i].offset));
	return json_pack("{s:s,s:s,s:s,s:o,s:I,s:I,s:o}", "name", t->name, "src_dtype",
			 st_dtype_name(t->src_dtype), "dtype", st_dtype_name(t->dtype), "shape",
			 shape, "layer", (json_int_t)t->layer, "expert", (json_int_t)t->expert,
			 "copies", copies);
}

char *manifest_to_json(const struct manifest *m)
{
	json_t *root, *files = json_array(), *meta = json_object(), *tensors = json_array(),
		      *nodes = json_array();
	char *text;

	for (size_t i = 0; i < m->n_files; i++) {
		const struct file_print *p = &m->files[i].print;

		json_array_append_new(files, json_pack("{s:s,s:I,s:I,s:I,s:I}", "path",
						       m->files[i].path, "dev", (json_int_t)p->dev,
						       "ino", (json_int_t)p->ino, "size",
						       (json_int_t)p->size, "mtime_ns",
						       (json_int_t)p->mtime_ns));
	}
	for (size_t i = 0; i < m->n_meta; i++)
		json_object_set_new(meta, m->meta[i][0], json_string(m->meta[i][1]));
	for (size_t i = 0; i < m->n_tensors; i++)
		json_array_append_new(tensors, tensor_to_json(&m->tensors[i]));
	for (uint32_t i = 0; i < m->n_nodes; i++)
		json_array_append_new(nodes, json_integer((json_int_t)m->node_bytes[i]));
	root = json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:o}", "model", m->model, "dir", m->dir,
			 "placement", m->placement_key, "node_bytes", nodes, "files", files,
			 "metadata", meta, "tensors", tensors);
	if (!root)
		return NULL;
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return text;
}

/* A non-negative integer member of @obj no larger than @max. */
static int get_u64(json_t *obj, const char *key, uint64_t max, uint64_t *ret)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max)
		return -EBADMSG;
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

static char *get_str(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static int file_from_json(json_t *o, struct manifest_file *f)
{
	uint64_t mtime;

	f->path = get_str(o, "path");
	if (!f->path || get_u64(o, "dev", UINT64_MAX, &f->print.dev) ||
	    get_u64(o, "ino", UINT64_MAX, &f->print.ino) ||
	    get_u64(o, "size", UINT64_MAX, &f->print.size) ||
	    get_u64(o, "mtime_ns", INT64_MAX, &mtime))
		return -EBADMSG;
	f->print.mtime_ns = (int64_t)mtime;
	return 0;
}

/*
 * A tensor's copies: in range of their node's bytes, aligned, on distinct
 * nodes. None only for an expert's tensor (another host computes it).
 */
static int copies_from_json(json_t *copies, const struct manifest *m, struct manifest_tensor *t)
{
	uint64_t bytes = t->n_elements * st_dtype_size(t->dtype);
	size_t i;
	json_t *c;

	if (!json_is_array(copies) || (json_array_size(copies) < 1 && t->expert < 0) ||
	    json_array_size(copies) > PLACEMENT_MAX_COPIES)
		return -EBADMSG;
	json_array_foreach(copies, i, c) {
		json_int_t node, off;

		if (json_unpack(c, "[II]", &node, &off) < 0 || node < 0 ||
		    (uint64_t)node >= m->n_nodes || off < 0 || off % STORE_ALIGN ||
		    (uint64_t)off > m->node_bytes[node] || bytes > m->node_bytes[node] - (uint64_t)off)
			return -EBADMSG;
		for (size_t k = 0; k < i; k++)
			if (t->copy[k].node == (uint32_t)node)
				return -EBADMSG;
		t->copy[i] = (struct manifest_copy){ (uint32_t)node, (uint64_t)off };
	}
	t->n_copies = (uint32_t)json_array_size(copies);
	return 0;
}

static int tensor_from_json(json_t *o, const struct manifest *m, struct manifest_tensor *t)
{
	json_t *shape = json_object_get(o, "shape"), *dim, *expert;
	const char *src_dtype, *dtype;
	uint64_t layer, n = 1;
	size_t i;

	t->name = get_str(o, "name");
	src_dtype = json_string_value(json_object_get(o, "src_dtype"));
	dtype = json_string_value(json_object_get(o, "dtype"));
	expert = json_object_get(o, "expert");
	if (!t->name || !t->name[0] || !src_dtype ||
	    st_dtype_from_name(src_dtype, &t->src_dtype) < 0 || !dtype ||
	    st_dtype_from_name(dtype, &t->dtype) < 0 ||
	    (t->dtype != ST_F32 && t->dtype != t->src_dtype) ||
	    (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16) ||
	    !json_is_array(shape) || json_array_size(shape) > ST_MAX_DIMS ||
	    get_u64(o, "layer", MODEL_MAX_LAYERS, &layer) || !json_is_integer(expert) ||
	    json_integer_value(expert) < -1 || json_integer_value(expert) >= 1 << 16)
		return -EBADMSG;
	t->layer = (uint32_t)layer;
	t->expert = json_integer_value(expert);
	t->ndim = (unsigned)json_array_size(shape);
	json_array_foreach(shape, i, dim) {
		if (!json_is_integer(dim) || json_integer_value(dim) < 0 ||
		    json_integer_value(dim) > (1ll << 40))
			return -EBADMSG;
		t->shape[i] = (uint64_t)json_integer_value(dim);
		if (t->shape[i] && n > (UINT64_MAX / sizeof(float)) / t->shape[i])
			return -EBADMSG;
		n *= t->shape[i];
	}
	t->n_elements = n;
	return copies_from_json(json_object_get(o, "copies"), m, t);
}

static int manifest_parse(json_t *root, struct manifest *m)
{
	json_t *files, *meta, *tensors, *nodes, *v;
	const char *key;
	size_t i;

	m->model = get_str(root, "model");
	m->dir = get_str(root, "dir");
	m->placement_key = get_str(root, "placement");
	files = json_object_get(root, "files");
	meta = json_object_get(root, "metadata");
	tensors = json_object_get(root, "tensors");
	nodes = json_object_get(root, "node_bytes");
	if (!m->model || !m->dir || !m->placement_key || !json_is_array(files) ||
	    !json_is_object(meta) || !json_is_array(tensors) || !json_is_array(nodes) ||
	    json_array_size(nodes) < 1 || json_array_size(nodes) > TOPOLOGY_MAX_NODES)
		return -EBADMSG;
	m->n_nodes = (uint32_t)json_array_size(nodes);
	json_array_foreach(nodes, i, v)
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return -EBADMSG;
		else
			m->node_bytes[i] = (uint64_t)json_integer_value(v);
	m->files = calloc(json_array_size(files) ?: 1, sizeof(*m->files));
	m->meta = calloc(json_object_size(meta) ?: 1, sizeof(*m->meta));
	m->tensors = calloc(json_array_size(tensors) ?: 1, sizeof(*m->tensors));
	if (!m->files || !m->meta || !m->tensors)
		return -ENOMEM;
	json_array_foreach(files, i, v) {
		m->n_files++;
		if (file_from_json(v, &m->files[i]) < 0)
			return -EBADMSG;
	}
	json_object_foreach(meta, key, v) {
		if (!json_is_string(v))
			return -EBADMSG;
		m->meta[m->n_meta][0] = strdup(key);
		m->meta[m->n_meta][1] = strdup(json_string_value(v));
		if (!m->meta[m->n_meta][0] || !m->meta[m->n_meta][1])
			return m->n_meta++, -ENOMEM;
		m->n_meta++;
	}
	json_array_foreach(tensors, i, v) {
		m->n_tensors++;
		if (tensor_from_json(v, m, &m->tensors[i]) < 0)
			return -EBADMSG;
	}
	return 0;
}

int manifest_from_json(const char *json, size_t len, struct manifest *m, struct diag *d)
{
	json_error_t jerr;
	json_t *root;
	int r;

	memset(m, 0, sizeof(*m));
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return diag_set(d, -EBADMSG, "manifest is not JSON: %s", jerr.text);
	r = json_is_object(root) ? manifest_parse(root, m) : -EBADMSG;
	json_decref(root);
	if (r < 0) {
		manifest_done(m);
		return diag_set(d, r, r == -ENOMEM ? "out of memory reading the manifest"
						   : "manifest does not describe a store");
	}
	return 0;
}

void manifest_done(struct manifest *m)
{
	for (size_t i = 0; m->files && i < m->n_files; i++)
		free(m->files[i].path);
	for (size_t i = 0; m->meta && i < m->n_meta; i++) {
		free(m->meta[i][0]);
		free(m->meta[i][1]);
	}
	for (size_t i = 0; m->tensors && i < m->n_tensors; i++)
		free(m->tensors[i].name);
	free(m->files);
	free(m->meta);
	free(m->tensors);
	free(m->model);
	free(m->dir);
	free(m->placement_key);
	memset(m, 0, sizeof(*m));
}
