/* SPDX-License-Identifier: MIT */
/*
 * safetensors tensor sets: one checkpoint that is a single .safetensors file or
 * several shards tied together by a Hugging Face model.safetensors.index.json
 * ("weight_map": tensor name -> shard file name). Opens every shard with the
 * validating reader, checks that the index and the shards agree and that no
 * tensor name appears twice, and offers one name lookup and one metadata view
 * across all of them. Shard names come from the (untrusted) index, so they are
 * plain file names inside the index's folder: no "/", no "." or "..".
 */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#define ST_INDEX_NAME  "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

struct st_set_tensor {
	const struct st_tensor *t; /* owned by files[file] */
	size_t file;
};

struct st_set_meta {
	const char *key; /* owned by one of the files */
	const char *value;
	size_t order; /* position in the concatenation of the files' metadata */
};

struct st_set {
	char *dir;
	struct st_file **files; /* in index order */
	size_t n_files;
	struct st_set_tensor *tensors; /* every shard's tensors, sorted by name */
	size_t n_tensors;
	struct st_set_meta *meta; /* sorted by key */
	size_t n_meta;
	/* a virtual set (st_set_new_virtual) owns its tensors and strings instead */
	struct st_tensor *virt_tensors;
	char *virt_strings;
};

/* "DIR/NAME" in a new string, or NULL. */
static char *path_join(const char *dir, const char *name)
{
	size_t ld = strlen(dir), ln = strlen(name);
	char *p = malloc(ld + 1 + ln + 1);

	if (!p)
		return NULL;
	memcpy(p, dir, ld);
	p[ld] = '/';
	memcpy(p + ld + 1, name, ln + 1);
	return p;
}

/* The folder part of @path ("." when there is none), in a new string. */
static char *path_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

static bool str_endswith(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

static int st_set_tensor_cmp(const void *a, const void *b)
{
	const struct st_set_tensor *ta = a, *tb = b;

	return strcmp(ta->t->name, tb->t->name);
}

static int st_set_tensor_key_cmp(const void *key, const void *elem)
{
	const struct st_set_tensor *e = elem;

	return strcmp(key, e->t->name);
}

static int st_set_meta_key_cmp(const void *key, const void *elem)
{
	const struct st_set_meta *m = elem;

	return strcmp(key, m->key);
}

/* By key, then by order, so that the first of a run of equal keys is the one that wins. */
static int st_set_meta_cmp(const void *a, const void *b)
{
	const struct st_set_meta *ma = a, *mb = b;
	int c = strcmp(ma->key, mb->key);

	if (c)
		return c;
	return ma->order < mb->order ? -1 : ma->order > mb->order;
}

/* Open @path and append it to s->files. */
static int st_set_add_file(struct st_set *s, const char *path, struct diag *d)
{
	struct st_file **files;
	struct st_file *f;
	int r;

	files = reallocarray(s->files, s->n_files + 1, sizeof(*files));
	if (!files)
		return diag_set(d, -ENOMEM, "%s: out of memory", path);
	s->files = files;
	r = st_file_open(path, &f, d);
	if (r < 0)
		return r;
	s->files[s->n_files++] = f;
	return 0;
}

/* Read the whole of a (small) JSON file and parse it, duplicates refused. */
static int json_load_path(const char *path, json_t **ret_root, struct diag *d)
{
	json_error_t jerr;
	struct stat st;
	char *buf;
	size_t len = 0;
	json_t *root;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return diag_set(d, -errno, "%s: cannot open: %m", path);
	if (fstat(fd, &st) < 0) {
		r = diag_set(d, -errno, "%s: cannot stat: %m", path);
		goto close_fd;
	}
	if (!S_ISREG(st.st_mode)) {
		r = diag_set(d, -EINVAL, "%s: not a regular file", path);
		goto close_fd;
	}
	if (st.st_size > (off_t)ST_HEADER_MAX) {
		r = diag_set(d, -EFBIG, "%s: %" PRIdMAX " bytes, larger than the limit of %u",
			     path, (intmax_t)st.st_size, ST_HEADER_MAX);
		goto close_fd;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		r = diag_set(d, -ENOMEM, "%s: out of memory", path);
		goto close_fd;
	}
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = diag_set(d, -errno, "%s: cannot read: %m", path);
			goto free_buf;
		}
		if (n == 0)
			break; /* shrank meanwhile: parse what is there */
		len += (size_t)n;
	}
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		r = diag_set(d, json_error_code(&jerr) == json_error_out_of_memory ? -ENOMEM
										    : -EINVAL,
			     "%s: not valid JSON: %s (line %d, column %d)", path, jerr.text,
			     jerr.line, jerr.column);
		goto free_buf;
	}
	*ret_root = root;
	r = 0;
free_buf:
	free(buf);
close_fd:
	close(fd);
	return r;
}

/* A shard name from an index must be a plain file name in the index's folder. */
static bool shard_name_ok(const char *name)
{
	return name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 &&
	       strcmp(name, "..") != 0;
}

/*
 * Open the shards that the index at @path names, in order of first mention,
 * and check that each tensor is in the shard the index says.
 */
static int st_set_load_index(struct st_set *s, const char *path, struct diag *d)
{
	json_t *root, *map, *shards, *jv, *jid;
	const char *name;
	int r;

	r = json_load_path(path, &root, d);
	if (r < 0)
		return r;
	map = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
	if (!json_is_object(map)) {
		r = diag_set(d, -EINVAL, "%s: no \"weight_map\" object", path);
		goto put_root;
	}
	/* shard name -> its index in s->files */
	shards = json_object();
	if (!shards) {
		r = diag_set(d, -ENOMEM, "%s: out of memory", path);
		goto put_root;
	}
	json_object_foreach(map, name, jv) {
		const char *shard = json_string_value(jv);
		char *shard_path;

		if (!shard) {
			r = diag_set(d, -EINVAL, "%s: tensor '%s': shard is not a string", path,
				     name);
			goto put_shards;
		}
		if (!shard_name_ok(shard)) {
			r = diag_set(d, -EINVAL,
				     "%s: tensor '%s': shard '%s' is not a file name in the "
				     "index's folder",
				     path, name, shard);
			goto put_shards;
		}
		if (json_object_get(shards, shard))
			continue;
		if (json_object_set_new(shards, shard, json_integer((json_int_t)s->n_files)) < 0) {
			r = diag_set(d, -ENOMEM, "%s: out of memory", path);
			goto put_shards;
		}
		shard_path = path_join(s->dir, shard);
		if (!shard_path) {
			r = diag_set(d, -ENOMEM, "%s: out of memory", path);
			goto put_shards;
		}
		r = st_set_add_file(s, shard_path, d);
		free(shard_path);
		if (r < 0) {
			diag_prefix(d, r, "%s", path);
			goto put_shards;
		}
	}
	json_object_foreach(map, name, jv) {
		const struct st_file *f;

		jid = json_object_get(shards, json_string_value(jv));
		f = s->files[(size_t)json_integer_value(jid)];
		if (!st_file_find(f, name)) {
			r = diag_set(d, -EINVAL, "%s: tensor '%s': not in its shard %s", path, name,
				     st_file_path(f));
			goto put_shards;
		}
	}
	r = 0;
put_shards:
	json_decref(shards);
put_root:
	json_decref(root);
	return r;
}

/* The sorted name table over every shard, refusing a name found twice. */
static int st_set_index_tensors(struct st_set *s, struct diag *d)
{
	size_t total = 0, k = 0;

	for (size_t i = 0; i < s->n_files; i++)
		total += st_file_tensor_count(s->files[i]);
	s->tensors = calloc(total ?: 1, sizeof(*s->tensors));
	if (!s->tensors)
		return diag_set(d, -ENOMEM, "%s: out of memory", s->dir);
	for (size_t i = 0; i < s->n_files; i++) {
		for (size_t j = 0; j < st_file_tensor_count(s->files[i]); j++) {
			s->tensors[k].t = st_file_tensor_at(s->files[i], j);
			s->tensors[k].file = i;
			k++;
		}
	}
	s->n_tensors = total;
	qsort(s->tensors, total, sizeof(*s->tensors), st_set_tensor_cmp);
	for (size_t i = 1; i < total; i++) {
		const struct st_set_tensor *a = &s->tensors[i - 1], *b = &s->tensors[i];

		if (strcmp(a->t->name, b->t->name) == 0)
			return diag_set(d, -EINVAL, "tensor '%s' is in both %s and %s", b->t->name,
					st_file_path(s->files[a->file]),
					st_file_path(s->files[b->file]));
	}
	return 0;
}

/* The union of the shards' metadata; on a conflict the earlier shard wins. */
static int st_set_index_metadata(struct st_set *s, struct diag *d)
{
	size_t total = 0, k = 0;

	for (size_t i = 0; i < s->n_files; i++)
		total += st_file_metadata_count(s->files[i]);
	s->meta = calloc(total ?: 1, sizeof(*s->meta));
	if (!s->meta)
		return diag_set(d, -ENOMEM, "%s: out of memory", s->dir);
	for (size_t i = 0; i < s->n_files; i++) {
		for (size_t j = 0; j < st_file_metadata_count(s->files[i]); j++) {
			struct st_set_meta *m = &s->meta[k];

			st_file_metadata_at(s->files[i], j, &m->key, &m->value);
			m->order = k++;
		}
	}
	/* Sorted by (key, order): keep the first of each run of equal keys. */
	qsort(s->meta, k, sizeof(*s->meta), st_set_meta_cmp);
	s->n_meta = 0;
	for (size_t i = 0; i < k; i++)
		if (!s->n_meta || strcmp(s->meta[s->n_meta - 1].key, s->meta[i].key) != 0)
			s->meta[s->n_meta++] = s->meta[i];
	return 0;
}

int st_set_open(const char *path, struct st_set **ret_set, struct diag *d)
{
	char *index_path = NULL, *single = NULL;
	struct st_set *s;
	struct stat st;
	int r;

	if (!path || !ret_set)
		return diag_set(d, -EINVAL, "st_set_open: invalid argument");
	if (stat(path, &st) < 0)
		return diag_set(d, -errno, "%s: %m", path);
	s = calloc(1, sizeof(*s));
	if (!s)
		return diag_set(d, -ENOMEM, "%s: out of memory", path);

	if (S_ISDIR(st.st_mode)) {
		s->dir = strdup(path);
		index_path = path_join(path, ST_INDEX_NAME);
		single = path_join(path, ST_SINGLE_NAME);
		if (!s->dir || !index_path || !single) {
			r = diag_set(d, -ENOMEM, "%s: out of memory", path);
			goto free_set;
		}
		if (stat(index_path, &st) == 0) {
			r = st_set_load_index(s, index_path, d);
		} else if (errno != ENOENT) {
			r = diag_set(d, -errno, "%s: %m", index_path);
		} else if (stat(single, &st) == 0) {
			r = st_set_add_file(s, single, d);
		} else if (errno != ENOENT) {
			r = diag_set(d, -errno, "%s: %m", single);
		} else {
			r = diag_set(d, -ENOENT, "%s: holds neither %s nor %s", path,
				     ST_INDEX_NAME, ST_SINGLE_NAME);
		}
	} else {
		s->dir = path_dirname(path);
		if (!s->dir) {
			r = diag_set(d, -ENOMEM, "%s: out of memory", path);
			goto free_set;
		}
		if (str_endswith(path, ".json"))
			r = st_set_load_index(s, path, d);
		else
			r = st_set_add_file(s, path, d);
	}
	if (r < 0)
		goto free_set;
	r = st_set_index_tensors(s, d);
	if (r < 0)
		goto free_set;
	r = st_set_index_metadata(s, d);
	if (r < 0)
		goto free_set;

	free(single);
	free(index_path);
	*ret_set = s;
	return 0;

free_set:
	free(single);
	free(index_path);
	st_set_free(s);
	return r;
}

struct st_set *st_set_free(struct st_set *s)
{
	if (!s)
		return NULL;
	for (size_t i = 0; i < s->n_files; i++)
		st_file_free(s->files[i]);
	free(s->files);
	free(s->tensors);
	free(s->meta);
	free(s->virt_tensors);
	free(s->virt_strings);
	free(s->dir);
	free(s);
	return NULL;
}

const struct st_tensor *st_set_find(const struct st_set *s, const char *name)
{
	const struct st_set_tensor *e;

	if (!s || !name || !s->n_tensors)
		return NULL;
	e = bsearch(name, s->tensors, s->n_tensors, sizeof(*s->tensors), st_set_tensor_key_cmp);
	return e ? e->t : NULL;
}

const char *st_set_metadata(const struct st_set *s, const char *key)
{
	const struct st_set_meta *m;

	if (!s || !key || !s->n_meta)
		return NULL;
	m = bsearch(key, s->meta, s->n_meta, sizeof(*s->meta), st_set_meta_key_cmp);
	return m ? m->value : NULL;
}

size_t st_set_file_count(const struct st_set *s)
{
	return s ? s->n_files : 0;
}

const struct st_file *st_set_file_at(const struct st_set *s, size_t i)
{
	if (!s || i >= s->n_files)
		return NULL;
	return s->files[i];
}

const char *st_set_dir(const struct st_set *s)
{
	return s ? s->dir : NULL;
}

size_t st_set_tensor_count(const struct st_set *s)
{
	return s->n_tensors;
}

const struct st_tensor *st_set_tensor_at(const struct st_set *s, size_t i)
{
	return i < s->n_tensors ? s->tensors[i].t : NULL;
}

size_t st_set_metadata_count(const struct st_set *s)
{
	return s->n_meta;
}

void st_set_metadata_at(const struct st_set *s, size_t i, const char **ret_key,
			const char **ret_value)
{
	if (i >= s->n_meta)
		return;
	*ret_key = s->meta[i].key;
	*ret_value = s->meta[i].value;
}

int st_set_tensor_file(const struct st_set *s, const struct st_tensor *t,
		       const struct st_file **ret_file, uint64_t *ret_offset)
{
	const struct st_set_tensor *e;

	if (s->virt_tensors || !t)
		return -ENOENT;
	e = bsearch(t->name, s->tensors, s->n_tensors, sizeof(*s->tensors),
		    st_set_tensor_key_cmp);
	if (!e || e->t != t)
		return -ENOENT;
	*ret_file = s->files[e->file];
	*ret_offset = st_file_data_offset(s->files[e->file], t);
	return 0;
}

/* Copy @src into the string pool at *pos; returns the copy. */
static const char *pool_copy(char *pool, size_t *pos, const char *src)
{
	size_t len = strlen(src) + 1;
	char *dst = pool + *pos;

	memcpy(dst, src, len);
	*pos += len;
	return dst;
}

/* The shape agrees with the dtype and the byte count, without overflow (data may be NULL). */
static bool virtual_tensor_ok(const struct st_tensor *t)
{
	uint64_t n = 1;
	size_t size = st_dtype_size(t->dtype);

	if (!t->name || !t->name[0] || !size || t->ndim > ST_MAX_DIMS)
		return false;
	for (unsigned i = 0; i < t->ndim; i++)
		if (t->shape[i] && n > UINT64_MAX / t->shape[i])
			return false;
		else
			n *= t->shape[i];
	return n == t->n_elements && n <= UINT64_MAX / size && n * size == t->n_bytes;
}

int st_set_new_virtual(const char *dir, const struct st_tensor *tensors, size_t n_tensors,
		       const char *const (*meta)[2], size_t n_meta, struct st_set **ret_set,
		       struct diag *d)
{
	size_t strings = 0, pos = 0;
	struct st_set *s;
	int r;

	for (size_t i = 0; i < n_tensors; i++) {
		if (!virtual_tensor_ok(&tensors[i]))
			return diag_set(d, -EINVAL, "tensor %zu ('%s'): inconsistent size", i,
					tensors[i].name ? tensors[i].name : "");
		strings += strlen(tensors[i].name) + 1;
	}
	for (size_t i = 0; i < n_meta; i++)
		strings += strlen(meta[i][0]) + 1 + strlen(meta[i][1]) + 1;
	s = calloc(1, sizeof(*s));
	if (!s)
		return diag_set(d, -ENOMEM, "out of memory");
	s->dir = strdup(dir);
	s->virt_tensors = calloc(n_tensors ?: 1, sizeof(*s->virt_tensors));
	s->virt_strings = malloc(strings ?: 1);
	s->tensors = calloc(n_tensors ?: 1, sizeof(*s->tensors));
	s->meta = calloc(n_meta ?: 1, sizeof(*s->meta));
	if (!s->dir || !s->virt_tensors || !s->virt_strings || !s->tensors || !s->meta) {
		r = diag_set(d, -ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n_tensors; i++) {
		s->virt_tensors[i] = tensors[i];
		s->virt_tensors[i].name = pool_copy(s->virt_strings, &pos, tensors[i].name);
		s->tensors[i].t = &s->virt_tensors[i];
	}
	s->n_tensors = n_tensors;
	qsort(s->tensors, n_tensors, sizeof(*s->tensors), st_set_tensor_cmp);
	for (size_t i = 1; i < n_tensors; i++)
		if (strcmp(s->tensors[i - 1].t->name, s->tensors[i].t->name) == 0) {
			r = diag_set(d, -EINVAL, "tensor '%s' appears twice", s->tensors[i].t->name);
			goto fail;
		}
	for (size_t i = 0; i < n_meta; i++) {
		s->meta[i].key = pool_copy(s->virt_strings, &pos, meta[i][0]);
		s->meta[i].value = pool_copy(s->virt_strings, &pos, meta[i][1]);
		s->meta[i].order = i;
	}
	s->n_meta = n_meta;
	qsort(s->meta, n_meta, sizeof(*s->meta), st_set_meta_cmp);
	for (size_t i = 1; i < n_meta; i++)
		if (strcmp(s->meta[i - 1].key, s->meta[i].key) == 0) {
			r = diag_set(d, -EINVAL, "metadata key '%s' appears twice", s->meta[i].key);
			goto fail;
		}
	*ret_set = s;
	return 0;
fail:
	st_set_free(s);
	return r;
}
