/* SPDX-License-Identifier: MIT */
/*
 * safetensors writer: collects tensors (by pointer) and metadata, then writes
 * the whole file in one go, tensors packed in name order after a header padded
 * with spaces to a multiple of 8, into PATH.tmp which is renamed over PATH, so
 * a reader sees the old file or the new one and never half of one. Everything
 * it writes is something the reader in safetensors.c accepts. See safetensors.h.
 */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

struct st_writer_tensor {
	char *name;
	enum st_dtype dtype;
	unsigned ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t n_bytes;
	const void *data;
};

struct st_writer {
	struct st_writer_tensor *tensors;
	size_t n_tensors;
	size_t cap;
	json_t *names;	  /* the set of names added, for -EEXIST */
	json_t *metadata; /* key -> string */
};

int st_writer_new(struct st_writer **ret_writer)
{
	struct st_writer *w;

	if (!ret_writer)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->names = json_object();
	w->metadata = json_object();
	if (!w->names || !w->metadata) {
		st_writer_free(w);
		return -ENOMEM;
	}
	*ret_writer = w;
	return 0;
}

struct st_writer *st_writer_free(struct st_writer *w)
{
	if (!w)
		return NULL;
	for (size_t i = 0; i < w->n_tensors; i++)
		free(w->tensors[i].name);
	free(w->tensors);
	json_decref(w->names);
	json_decref(w->metadata);
	free(w);
	return NULL;
}

int st_writer_add(struct st_writer *w, const char *name, enum st_dtype dtype, unsigned ndim,
		  const uint64_t *shape, const void *data)
{
	struct st_writer_tensor *t;
	uint64_t n = 1, n_bytes;

	if (!w || !name || !name[0] || strcmp(name, "__metadata__") == 0 ||
	    !st_dtype_size(dtype) || ndim > ST_MAX_DIMS || (ndim && !shape))
		return -EINVAL;
	for (unsigned i = 0; i < ndim; i++) {
		/* The reader takes dimensions as JSON integers (int64). */
		if (shape[i] > INT64_MAX || __builtin_mul_overflow(n, shape[i], &n))
			return -EINVAL;
	}
	if (__builtin_mul_overflow(n, (uint64_t)st_dtype_size(dtype), &n_bytes) ||
	    n_bytes > INT64_MAX || (n_bytes && !data))
		return -EINVAL;
	if (json_object_get(w->names, name))
		return -EEXIST;

	if (w->n_tensors == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 16;
		struct st_writer_tensor *tensors;

		tensors = reallocarray(w->tensors, cap, sizeof(*tensors));
		if (!tensors)
			return -ENOMEM;
		w->tensors = tensors;
		w->cap = cap;
	}
	t = &w->tensors[w->n_tensors];
	memset(t, 0, sizeof(*t));
	t->name = strdup(name);
	if (!t->name)
		return -ENOMEM;
	/* Fails for a name that is not UTF-8 (or on OOM): JSON keys must be UTF-8. */
	if (json_object_set_new(w->names, name, json_true()) < 0) {
		free(t->name);
		return -EINVAL;
	}
	t->dtype = dtype;
	t->ndim = ndim;
	if (ndim)
		memcpy(t->shape, shape, ndim * sizeof(*shape));
	t->n_bytes = n_bytes;
	t->data = data;
	w->n_tensors++;
	return 0;
}

int st_writer_set_metadata(struct st_writer *w, const char *key, const char *value)
{
	json_t *jv;

	if (!w || !key || !value)
		return -EINVAL;
	jv = json_string(value);
	if (!jv)
		return -EINVAL; /* not UTF-8 */
	if (json_object_set_new(w->metadata, key, jv) < 0)
		return -EINVAL;
	return 0;
}

static int st_writer_tensor_cmp(const void *a, const void *b)
{
	const struct st_writer_tensor *ta = a, *tb = b;

	return strcmp(ta->name, tb->name);
}

/* The header object: tensors at consecutive offsets in name order, and the metadata. */
static int st_writer_header(struct st_writer *w, json_t **ret_root)
{
	json_t *root, *entry;
	uint64_t offset = 0;

	if (w->n_tensors) /* w->tensors is NULL until the first add */
		qsort(w->tensors, w->n_tensors, sizeof(*w->tensors), st_writer_tensor_cmp);
	root = json_object();
	if (!root)
		return -ENOMEM;
	for (size_t i = 0; i < w->n_tensors; i++) {
		const struct st_writer_tensor *t = &w->tensors[i];
		json_t *shape;

		if (t->n_bytes > INT64_MAX - offset)
			goto put_root_efbig;
		shape = json_array();
		if (!shape)
			goto put_root_enomem;
		for (unsigned k = 0; k < t->ndim; k++) {
			if (json_array_append_new(shape, json_integer((json_int_t)t->shape[k])) < 0) {
				json_decref(shape);
				goto put_root_enomem;
			}
		}
		/* "O" takes its own reference: shape is ours to drop either way. */
		entry = json_pack("{s:s, s:O, s:[I, I]}", "dtype", st_dtype_name(t->dtype),
				  "shape", shape, "data_offsets", (json_int_t)offset,
				  (json_int_t)(offset + t->n_bytes));
		json_decref(shape);
		if (!entry || json_object_set_new(root, t->name, entry) < 0)
			goto put_root_enomem;
		offset += t->n_bytes;
	}
	if (json_object_size(w->metadata) &&
	    json_object_set(root, "__metadata__", w->metadata) < 0)
		goto put_root_enomem;
	*ret_root = root;
	return 0;

put_root_efbig:
	json_decref(root);
	return -EFBIG;
put_root_enomem:
	json_decref(root);
	return -ENOMEM;
}

/* write() all of @buf, through short writes and EINTR. */
static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int st_writer_write(struct st_writer *w, const char *path, struct diag *d)
{
	size_t json_len, padded;
	uint64_t hlen;
	uint8_t le[8];
	char *json, *tmp;
	json_t *root;
	int fd, r;

	if (!w || !path)
		return diag_set(d, -EINVAL, "st_writer_write: invalid argument");
	r = st_writer_header(w, &root);
	if (r < 0)
		return diag_set(d, r, "%s: cannot build the header: %s", path, strerror(-r));
	json = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	if (!json)
		return diag_set(d, -ENOMEM, "%s: cannot build the header: out of memory", path);
	json_len = strlen(json);
	padded = (json_len + 7) & ~(size_t)7;
	if (padded > ST_HEADER_MAX) {
		r = diag_set(d, -EFBIG, "%s: header of %zu bytes exceeds the limit of %u", path,
			     padded, ST_HEADER_MAX);
		goto free_json;
	}
	hlen = padded;
	for (unsigned i = 0; i < 8; i++)
		le[i] = (uint8_t)(hlen >> (8 * i));

	tmp = malloc(strlen(path) + sizeof(".tmp"));
	if (!tmp) {
		r = diag_set(d, -ENOMEM, "%s: out of memory", path);
		goto free_json;
	}
	strcpy(stpcpy(tmp, path), ".tmp");
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0) {
		r = diag_set(d, -errno, "%s: cannot create: %m", tmp);
		goto free_tmp;
	}
	r = write_all(fd, le, sizeof(le));
	if (r >= 0)
		r = write_all(fd, json, json_len);
	if (r >= 0)
		r = write_all(fd, "        ", padded - json_len);
	for (size_t i = 0; r >= 0 && i < w->n_tensors; i++)
		if (w->tensors[i].n_bytes)
			r = write_all(fd, w->tensors[i].data, w->tensors[i].n_bytes);
	if (r < 0) {
		r = diag_set(d, r, "%s: cannot write: %s", tmp, strerror(-r));
		goto close_fd;
	}
	if (close(fd) < 0) {
		r = diag_set(d, -errno, "%s: cannot write: %m", tmp);
		goto unlink_tmp;
	}
	if (rename(tmp, path) < 0) {
		r = diag_set(d, -errno, "%s: cannot rename to %s: %m", tmp, path);
		goto unlink_tmp;
	}
	free(tmp);
	free(json);
	return 0;

close_fd:
	close(fd);
unlink_tmp:
	unlink(tmp);
free_tmp:
	free(tmp);
free_json:
	free(json);
	return r;
}
