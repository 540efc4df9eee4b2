/* SPDX-License-Identifier: MIT */
/*
 * safetensors reader: maps a file (or copies an in-memory image), parses its
 * JSON header with jansson and validates every entry before handing out a
 * single byte of tensor data, so that the rest of the daemon can trust a
 * struct st_tensor's shape, size and data pointer. Also the dtype table and
 * the conversions of stored tensors to float32 and int32. See safetensors.h.
 */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "model/half.h"

struct st_meta {
	const char *key;
	const char *value;
};

struct st_file {
	char *path;		 /* the file's path, or the label of a memory image */
	void *base;		 /* the whole file: a mapping or a heap copy */
	size_t size;
	bool mapped;		 /* base is an mmap() rather than a malloc() */
	const uint8_t *data;	 /* the data section, inside base */
	size_t data_len;
	struct st_tensor *tensors; /* sorted by name */
	size_t n_tensors;
	struct st_meta *meta;	 /* sorted by key */
	size_t n_meta;
	char *strings;		 /* one pool holding every name, key and value */
};

/* A tensor's byte range during validation, to find overlaps. */
struct st_range {
	uint64_t begin;
	uint64_t end;
	const char *name;
};

static const struct {
	const char *name;
	size_t size;
} st_dtypes[ST_DTYPE_COUNT] = {
	[ST_BOOL] = { "BOOL", 1 }, [ST_U8] = { "U8", 1 },     [ST_I8] = { "I8", 1 },
	[ST_I16] = { "I16", 2 },   [ST_U16] = { "U16", 2 },   [ST_F16] = { "F16", 2 },
	[ST_BF16] = { "BF16", 2 }, [ST_I32] = { "I32", 4 },   [ST_U32] = { "U32", 4 },
	[ST_F32] = { "F32", 4 },   [ST_I64] = { "I64", 8 },   [ST_U64] = { "U64", 8 },
	[ST_F64] = { "F64", 8 },
};

size_t st_dtype_size(enum st_dtype dtype)
{
	if ((unsigned)dtype >= ST_DTYPE_COUNT)
		return 0;
	return st_dtypes[dtype].size;
}

const char *st_dtype_name(enum st_dtype dtype)
{
	if ((unsigned)dtype >= ST_DTYPE_COUNT)
		return NULL;
	return st_dtypes[dtype].name;
}

int st_dtype_from_name(const char *name, enum st_dtype *ret_dtype)
{
	if (!name)
		return -EINVAL;
	for (unsigned i = 0; i < ST_DTYPE_COUNT; i++) {
		if (strcmp(name, st_dtypes[i].name) == 0) {
			if (ret_dtype)
				*ret_dtype = (enum st_dtype)i;
			return 0;
		}
	}
	return -EINVAL;
}

/*
 * Little-endian loads from possibly unaligned bytes. memcpy() compiles to a
 * plain load; on a big-endian host the bytes are swapped afterwards.
 */
static uint16_t load_le16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap16(v);
#endif
	return v;
}

static uint32_t load_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap32(v);
#endif
	return v;
}

static uint64_t load_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static float f32_from_bits(uint32_t bits)
{
	float f;

	memcpy(&f, &bits, sizeof(f));
	return f;
}

static double f64_from_bits(uint64_t bits)
{
	double f;

	memcpy(&f, &bits, sizeof(f));
	return f;
}

static int st_tensor_name_cmp(const void *a, const void *b)
{
	const struct st_tensor *ta = a, *tb = b;

	return strcmp(ta->name, tb->name);
}

static int st_tensor_key_cmp(const void *key, const void *elem)
{
	const struct st_tensor *t = elem;

	return strcmp(key, t->name);
}

static int st_meta_cmp(const void *a, const void *b)
{
	const struct st_meta *ma = a, *mb = b;

	return strcmp(ma->key, mb->key);
}

static int st_meta_key_cmp(const void *key, const void *elem)
{
	const struct st_meta *m = elem;

	return strcmp(key, m->key);
}

static int st_range_cmp(const void *a, const void *b)
{
	const struct st_range *ra = a, *rb = b;

	if (ra->begin != rb->begin)
		return ra->begin < rb->begin ? -1 : 1;
	if (ra->end != rb->end)
		return ra->end < rb->end ? -1 : 1;
	return 0;
}

/* A JSON non-negative integer as uint64; -EINVAL for anything else. */
static int json_get_u64(const json_t *v, uint64_t *ret)
{
	json_int_t i;

	if (!json_is_integer(v))
		return -EINVAL;
	i = json_integer_value(v);
	if (i < 0)
		return -EINVAL;
	*ret = (uint64_t)i;
	return 0;
}

/*
 * Validate one header entry (@name: @value) against the data section of @f.
 * On success fills @t (its name still borrowed from the JSON) and @range.
 */
static int st_tensor_parse(const struct st_file *f, const char *name, json_t *value,
			   struct st_tensor *t, struct st_range *range, struct diag *d)
{
	const char *path = f->path;
	size_t data_len = f->data_len;
	json_t *jdtype, *jshape, *joffs, *jv;
	const char *key;
	uint64_t n = 1, n_bytes, begin, end;
	size_t dim_count;
	enum st_dtype dtype;

	if (name[0] == '\0')
		return diag_set(d, -EINVAL, "%s: a tensor has an empty name", path);
	if (!json_is_object(value))
		return diag_set(d, -EINVAL, "%s: tensor '%s': entry is not an object", path,
				name);
	json_object_foreach(value, key, jv) {
		if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
		    strcmp(key, "data_offsets") != 0)
			return diag_set(d, -EINVAL, "%s: tensor '%s': unexpected key '%s'", path,
					name, key);
	}
	jdtype = json_object_get(value, "dtype");
	jshape = json_object_get(value, "shape");
	joffs = json_object_get(value, "data_offsets");
	if (!jdtype || !jshape || !joffs)
		return diag_set(d, -EINVAL, "%s: tensor '%s': missing \"%s\"", path, name,
				!jdtype ? "dtype" : !jshape ? "shape" : "data_offsets");

	if (!json_is_string(jdtype))
		return diag_set(d, -EINVAL, "%s: tensor '%s': dtype is not a string", path, name);
	if (st_dtype_from_name(json_string_value(jdtype), &dtype) < 0)
		return diag_set(d, -EINVAL, "%s: tensor '%s': unknown dtype '%s'", path, name,
				json_string_value(jdtype));

	if (!json_is_array(jshape))
		return diag_set(d, -EINVAL, "%s: tensor '%s': shape is not an array", path, name);
	dim_count = json_array_size(jshape);
	if (dim_count > ST_MAX_DIMS)
		return diag_set(d, -EINVAL, "%s: tensor '%s': %zu dimensions, at most %d allowed",
				path, name, dim_count, ST_MAX_DIMS);
	for (size_t i = 0; i < dim_count; i++) {
		uint64_t dim;

		if (json_get_u64(json_array_get(jshape, i), &dim) < 0)
			return diag_set(d, -EINVAL,
					"%s: tensor '%s': shape[%zu] is not a non-negative integer",
					path, name, i);
		if (__builtin_mul_overflow(n, dim, &n))
			return diag_set(d, -EINVAL,
					"%s: tensor '%s': element count overflows (shape[%zu] = %" PRIu64
					")",
					path, name, i, dim);
		t->shape[i] = dim;
	}

	if (!json_is_array(joffs) || json_array_size(joffs) != 2 ||
	    json_get_u64(json_array_get(joffs, 0), &begin) < 0 ||
	    json_get_u64(json_array_get(joffs, 1), &end) < 0)
		return diag_set(d, -EINVAL,
				"%s: tensor '%s': data_offsets is not an array of 2 non-negative "
				"integers",
				path, name);
	if (begin > end)
		return diag_set(d, -EINVAL,
				"%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
				"] begin after end",
				path, name, begin, end);
	if (end > data_len)
		return diag_set(d, -EINVAL,
				"%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
				"] past the end of the %zu-byte data section",
				path, name, begin, end, data_len);
	if (__builtin_mul_overflow(n, (uint64_t)st_dtype_size(dtype), &n_bytes))
		return diag_set(d, -EINVAL, "%s: tensor '%s': byte size overflows", path, name);
	if (n_bytes != end - begin)
		return diag_set(d, -EINVAL,
				"%s: tensor '%s': %" PRIu64 " %s elements need %" PRIu64
				" bytes, data_offsets hold %" PRIu64,
				path, name, n, st_dtype_name(dtype), n_bytes, end - begin);

	t->name = name;
	t->dtype = dtype;
	t->ndim = (unsigned)dim_count;
	t->n_elements = n;
	t->n_bytes = n_bytes;
	t->data = f->data + begin;
	range->begin = begin;
	range->end = end;
	range->name = name;
	return 0;
}

/* "__metadata__": an object of strings. Fills f->meta with borrowed strings. */
static int st_meta_parse(struct st_file *f, json_t *jmeta, struct diag *d)
{
	const char *key;
	json_t *jv;
	size_t i = 0;

	if (!json_is_object(jmeta))
		return diag_set(d, -EINVAL, "%s: __metadata__ is not an object", f->path);
	f->meta = calloc(json_object_size(jmeta) ?: 1, sizeof(*f->meta));
	if (!f->meta)
		return diag_set(d, -ENOMEM, "%s: out of memory", f->path);
	json_object_foreach(jmeta, key, jv) {
		if (!json_is_string(jv))
			return diag_set(d, -EINVAL, "%s: __metadata__ '%s' is not a string",
					f->path, key);
		f->meta[i].key = key;
		f->meta[i].value = json_string_value(jv);
		i++;
	}
	f->n_meta = i;
	return 0;
}

/* Copy every borrowed JSON string into one pool owned by @f. */
static int st_file_own_strings(struct st_file *f, struct diag *d)
{
	size_t total = 1, len;
	char *p;

	for (size_t i = 0; i < f->n_tensors; i++)
		total += strlen(f->tensors[i].name) + 1;
	for (size_t i = 0; i < f->n_meta; i++)
		total += strlen(f->meta[i].key) + 1 + strlen(f->meta[i].value) + 1;
	f->strings = malloc(total);
	if (!f->strings)
		return diag_set(d, -ENOMEM, "%s: out of memory", f->path);
	p = f->strings;
	for (size_t i = 0; i < f->n_tensors; i++) {
		len = strlen(f->tensors[i].name) + 1;
		memcpy(p, f->tensors[i].name, len);
		f->tensors[i].name = p;
		p += len;
	}
	for (size_t i = 0; i < f->n_meta; i++) {
		len = strlen(f->meta[i].key) + 1;
		memcpy(p, f->meta[i].key, len);
		f->meta[i].key = p;
		p += len;
		len = strlen(f->meta[i].value) + 1;
		memcpy(p, f->meta[i].value, len);
		f->meta[i].value = p;
		p += len;
	}
	return 0;
}

/*
 * Validate the image in f->base/f->size and fill the tensor and metadata
 * tables. On failure the tables may be half-filled; st_file_free() copes.
 */
static int st_file_parse(struct st_file *f, struct diag *d)
{
	const uint8_t *base = f->base;
	struct st_range *ranges = NULL;
	json_t *root, *jv, *jmeta;
	json_error_t jerr;
	const char *key;
	uint64_t hlen;
	size_t n = 0, n_ranges = 0;
	int r;

	if (f->size < 8)
		return diag_set(d, -EINVAL, "%s: %zu bytes, too short for the 8-byte header length",
				f->path, f->size);
	hlen = load_le64(base);
	if (hlen > ST_HEADER_MAX)
		return diag_set(d, -EFBIG, "%s: header length %" PRIu64 " exceeds the limit of %u",
				f->path, hlen, ST_HEADER_MAX);
	if (hlen > f->size - 8)
		return diag_set(d, -EINVAL,
				"%s: header length %" PRIu64 " runs past the end of the %zu-byte file",
				f->path, hlen, f->size);
	f->data = base + 8 + hlen;
	f->data_len = f->size - 8 - (size_t)hlen;

	root = json_loadb((const char *)base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (json_error_code(&jerr) == json_error_out_of_memory)
			return diag_set(d, -ENOMEM, "%s: out of memory parsing the header", f->path);
		return diag_set(d, -EINVAL, "%s: header is not valid JSON: %s (header byte %d)",
				f->path, jerr.text, jerr.position);
	}
	if (!json_is_object(root)) {
		r = diag_set(d, -EINVAL, "%s: header is not a JSON object", f->path);
		goto put_root;
	}

	jmeta = json_object_get(root, "__metadata__");
	n = json_object_size(root) - (jmeta ? 1 : 0);
	f->tensors = calloc(n ?: 1, sizeof(*f->tensors));
	ranges = calloc(n ?: 1, sizeof(*ranges));
	if (!f->tensors || !ranges) {
		r = diag_set(d, -ENOMEM, "%s: out of memory", f->path);
		goto free_ranges;
	}
	json_object_foreach(root, key, jv) {
		if (strcmp(key, "__metadata__") == 0)
			continue;
		r = st_tensor_parse(f, key, jv, &f->tensors[f->n_tensors], &ranges[f->n_tensors],
				    d);
		if (r < 0)
			goto free_ranges;
		f->n_tensors++;
	}
	if (jmeta) {
		r = st_meta_parse(f, jmeta, d);
		if (r < 0)
			goto free_ranges;
	}

	/* Sorted by start, a range overlaps another only if it overlaps the one before it. */
	qsort(ranges, f->n_tensors, sizeof(*ranges), st_range_cmp);
	for (size_t i = 0; i < f->n_tensors; i++) {
		const struct st_range *prev = n_ranges ? &ranges[n_ranges - 1] : NULL;

		if (ranges[i].begin == ranges[i].end)
			continue; /* empty: overlaps nothing */
		if (prev && ranges[i].begin < prev->end) {
			r = diag_set(d, -EINVAL,
				     "%s: tensor '%s': bytes [%" PRIu64 ", %" PRIu64
				     ") overlap tensor '%s' [%" PRIu64 ", %" PRIu64 ")",
				     f->path, ranges[i].name, ranges[i].begin, ranges[i].end,
				     prev->name, prev->begin, prev->end);
			goto free_ranges;
		}
		ranges[n_ranges++] = ranges[i];
	}

	r = st_file_own_strings(f, d);
	if (r < 0)
		goto free_ranges;
	qsort(f->tensors, f->n_tensors, sizeof(*f->tensors), st_tensor_name_cmp);
	if (f->n_meta) /* f->meta is NULL without a __metadata__ */
		qsort(f->meta, f->n_meta, sizeof(*f->meta), st_meta_cmp);
	r = 0;

free_ranges:
	free(ranges);
	if (r < 0) {
		/* The names still point into the JSON about to be released. */
		f->n_tensors = 0;
		f->n_meta = 0;
	}
put_root:
	json_decref(root);
	return r;
}

static int st_file_new(const char *path, struct st_file **ret_file)
{
	struct st_file *f;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->path = strdup(path);
	if (!f->path) {
		free(f);
		return -ENOMEM;
	}
	*ret_file = f;
	return 0;
}

int st_file_open(const char *path, struct st_file **ret_file, struct diag *d)
{
	struct st_file *f;
	struct stat st;
	int fd, r;

	if (!path || !ret_file)
		return diag_set(d, -EINVAL, "st_file_open: invalid argument");
	r = st_file_new(path, &f);
	if (r < 0)
		return diag_set(d, r, "%s: out of memory", path);

	/* O_NONBLOCK: a FIFO must not hang us; it is refused as not a regular file. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		r = diag_set(d, -errno, "%s: cannot open: %m", path);
		goto free_file;
	}
	if (fstat(fd, &st) < 0) {
		r = diag_set(d, -errno, "%s: cannot stat: %m", path);
		goto close_fd;
	}
	if (!S_ISREG(st.st_mode)) {
		r = diag_set(d, S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL,
			     "%s: not a regular file", path);
		goto close_fd;
	}
#if SIZE_MAX < UINT64_MAX
	if ((uint64_t)st.st_size > SIZE_MAX) {
		r = diag_set(d, -EFBIG, "%s: too large to map", path);
		goto close_fd;
	}
#endif
	f->size = (size_t)st.st_size;
	/* Too short to hold a header: refuse before mmap(), which rejects length 0. */
	if (f->size < 8) {
		r = diag_set(d, -EINVAL, "%s: %zu bytes, too short for the 8-byte header length",
			     path, f->size);
		goto close_fd;
	}
	f->base = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f->base == MAP_FAILED) {
		f->base = NULL;
		r = diag_set(d, -errno, "%s: cannot map: %m", path);
		goto close_fd;
	}
	f->mapped = true;
	close(fd);

	r = st_file_parse(f, d);
	if (r < 0)
		goto free_file;
	*ret_file = f;
	return 0;

close_fd:
	close(fd);
free_file:
	st_file_free(f);
	return r;
}

int st_file_open_memory(const void *buf, size_t len, const char *label,
			struct st_file **ret_file, struct diag *d)
{
	struct st_file *f;
	int r;

	if (!label)
		label = "<memory>";
	if ((!buf && len) || !ret_file)
		return diag_set(d, -EINVAL, "%s: invalid argument", label);
	r = st_file_new(label, &f);
	if (r < 0)
		return diag_set(d, r, "%s: out of memory", label);
	f->base = malloc(len ?: 1);
	if (!f->base) {
		r = diag_set(d, -ENOMEM, "%s: out of memory", label);
		goto free_file;
	}
	if (len)
		memcpy(f->base, buf, len);
	f->size = len;

	r = st_file_parse(f, d);
	if (r < 0)
		goto free_file;
	*ret_file = f;
	return 0;

free_file:
	st_file_free(f);
	return r;
}

struct st_file *st_file_free(struct st_file *f)
{
	if (!f)
		return NULL;
	if (f->mapped)
		munmap(f->base, f->size);
	else
		free(f->base);
	free(f->strings);
	free(f->meta);
	free(f->tensors);
	free(f->path);
	free(f);
	return NULL;
}

const char *st_file_path(const struct st_file *f)
{
	return f ? f->path : NULL;
}

uint64_t st_file_size(const struct st_file *f)
{
	return f->size;
}

void st_file_header(const struct st_file *f, const void **ret_json, size_t *ret_len)
{
	/* st_file_parse() checked that the data section follows the header */
	*ret_json = (const uint8_t *)f->base + 8;
	*ret_len = (size_t)(f->data - (const uint8_t *)f->base) - 8;
}

uint64_t st_file_data_offset(const struct st_file *f, const struct st_tensor *t)
{
	return (uint64_t)((const uint8_t *)t->data - (const uint8_t *)f->base);
}

size_t st_file_tensor_count(const struct st_file *f)
{
	return f ? f->n_tensors : 0;
}

const struct st_tensor *st_file_tensor_at(const struct st_file *f, size_t i)
{
	if (!f || i >= f->n_tensors)
		return NULL;
	return &f->tensors[i];
}

const struct st_tensor *st_file_find(const struct st_file *f, const char *name)
{
	if (!f || !name || !f->n_tensors)
		return NULL;
	return bsearch(name, f->tensors, f->n_tensors, sizeof(*f->tensors), st_tensor_key_cmp);
}

const char *st_file_metadata(const struct st_file *f, const char *key)
{
	const struct st_meta *m;

	if (!f || !key || !f->n_meta)
		return NULL;
	m = bsearch(key, f->meta, f->n_meta, sizeof(*f->meta), st_meta_key_cmp);
	return m ? m->value : NULL;
}

size_t st_file_metadata_count(const struct st_file *f)
{
	return f ? f->n_meta : 0;
}

void st_file_metadata_at(const struct st_file *f, size_t i, const char **ret_key,
			 const char **ret_value)
{
	if (!f || i >= f->n_meta)
		return;
	if (ret_key)
		*ret_key = f->meta[i].key;
	if (ret_value)
		*ret_value = f->meta[i].value;
}

int st_tensor_to_f32(const struct st_tensor *t, float *dst, struct diag *d)
{
	const uint8_t *src;
	uint64_t n;

	if (!t || (!dst && t->n_elements))
		return diag_set(d, -EINVAL, "st_tensor_to_f32: invalid argument");
	src = t->data;
	n = t->n_elements;
	switch (t->dtype) {
	case ST_F32:
		for (uint64_t i = 0; i < n; i++)
			dst[i] = f32_from_bits(load_le32(src + 4 * i));
		break;
	case ST_F16:
		for (uint64_t i = 0; i < n; i++)
			dst[i] = f16_to_f32(load_le16(src + 2 * i));
		break;
	case ST_BF16:
		for (uint64_t i = 0; i < n; i++)
			dst[i] = bf16_to_f32(load_le16(src + 2 * i));
		break;
	case ST_F64:
		/* Annex F: out-of-range values round to +-inf. */
		for (uint64_t i = 0; i < n; i++)
			dst[i] = (float)f64_from_bits(load_le64(src + 8 * i));
		break;
	default:
		return diag_set(d, -EINVAL, "tensor '%s': dtype %s is not a floating-point type",
				t->name, st_dtype_name(t->dtype) ?: "?");
	}
	return 0;
}

static int st_i32_range_error(const struct st_tensor *t, uint64_t i, const char *value,
			      struct diag *d)
{
	return diag_set(d, -EINVAL, "tensor '%s': element %" PRIu64 " (%s) does not fit in int32",
			t->name, i, value);
}

int st_tensor_to_i32(const struct st_tensor *t, int32_t *dst, struct diag *d)
{
	char buf[32];
	const uint8_t *src;
	uint64_t n;

	if (!t || (!dst && t->n_elements))
		return diag_set(d, -EINVAL, "st_tensor_to_i32: invalid argument");
	src = t->data;
	n = t->n_elements;
	/* Range checks come first so that @dst is untouched on failure. */
	switch (t->dtype) {
	case ST_I64:
		for (uint64_t i = 0; i < n; i++) {
			int64_t v = (int64_t)load_le64(src + 8 * i);

			if (v < INT32_MIN || v > INT32_MAX) {
				snprintf(buf, sizeof(buf), "%" PRId64, v);
				return st_i32_range_error(t, i, buf, d);
			}
		}
		for (uint64_t i = 0; i < n; i++)
			dst[i] = (int32_t)(int64_t)load_le64(src + 8 * i);
		break;
	case ST_U64:
		for (uint64_t i = 0; i < n; i++) {
			uint64_t v = load_le64(src + 8 * i);

			if (v > INT32_MAX) {
				snprintf(buf, sizeof(buf), "%" PRIu64, v);
				return st_i32_range_error(t, i, buf, d);
			}
		}
		for (uint64_t i = 0; i < n; i++)
			dst[i] = (int32_t)load_le64(src + 8 * i);
		break;
	case ST_U32:
		for (uint64_t i = 0; i < n; i++) {
			uint32_t v = load_le32(src + 4 * i);

			if (v > INT32_MAX) {
				snprintf(buf, sizeof(buf), "%" PRIu32, v);
				return st_i32_range_error(t, i, buf, d);
			}
		}
		for (uint64_t i = 0; i < n; i++)
			dst[i] = (int32_t)load_le32(src + 4 * i);
		break;
	case ST_I32:
		for (uint64_t i = 0; i < n; i++)
			dst[i] = (int32_t)load_le32(src + 4 * i);
		break;
	case ST_I16:
		for (uint64_t i = 0; i < n; i++)
			dst[i] = (int16_t)load_le16(src + 2 * i);
		break;
	case ST_U16:
		for (uint64_t i = 0; i < n; i++)
			dst[i] = load_le16(src + 2 * i);
		break;
	case ST_I8:
		for (uint64_t i = 0; i < n; i++)
			dst[i] = (int8_t)src[i];
		break;
	case ST_U8:
		for (uint64_t i = 0; i < n; i++)
			dst[i] = src[i];
		break;
	default:
		return diag_set(d, -EINVAL, "tensor '%s': dtype %s is not an integer type",
				t->name, st_dtype_name(t->dtype) ?: "?");
	}
	return 0;
}
