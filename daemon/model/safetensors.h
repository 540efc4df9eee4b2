/* SPDX-License-Identifier: MIT */
/*
 * safetensors: a validating reader and a writer of the safetensors format.
 *
 * Format: 8 bytes little-endian header length N, N bytes of JSON, then the data
 * section. The JSON maps tensor names to {"dtype", "shape", "data_offsets":
 * [begin, end]} (offsets relative to the data section) and may hold a
 * "__metadata__" object of string to string.
 *
 * The reader maps the file read-only and trusts nothing in it: the header is
 * parsed with jansson (duplicate keys and integers that do not fit are
 * refused), its size is capped, every tensor's byte range must lie inside the
 * data section, ranges must not overlap, and dtype size times the product of
 * the shape must equal the range's length, all computed without overflow. A
 * refused file gets -EINVAL (or -EFBIG, -ENOMEM, an open/mmap errno) and a
 * diag that names the file and, where one is to blame, the tensor.
 *
 * Thread-safety: an opened st_file is immutable; any number of threads may read
 * it. A writer belongs to one thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/diag.h"

/* The header may not be larger than this (the reference implementation's cap). */
#define ST_HEADER_MAX (100u * 1024 * 1024)
#define ST_MAX_DIMS 8

enum st_dtype {
	ST_BOOL,
	ST_U8,
	ST_I8,
	ST_I16,
	ST_U16,
	ST_F16,
	ST_BF16,
	ST_I32,
	ST_U32,
	ST_F32,
	ST_I64,
	ST_U64,
	ST_F64,
	ST_DTYPE_COUNT,
};

struct st_tensor {
	const char *name;
	enum st_dtype dtype;
	unsigned ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t n_elements;
	uint64_t n_bytes;
	const void *data; /* inside the read-only mapping; may be unaligned */
};

struct st_file;

/* Bytes per element; 0 for an out-of-range value. */
size_t st_dtype_size(enum st_dtype dtype);
/* "F32", "BF16", …; NULL for an out-of-range value. */
const char *st_dtype_name(enum st_dtype dtype);
/* The inverse of st_dtype_name(): 0, or -EINVAL for an unknown name. */
int st_dtype_from_name(const char *name, enum st_dtype *ret_dtype);

/*
 * Map and validate @path. Returns 0 and sets *ret_file, which owns the
 * mapping, or a negative errno (see above) with *ret_file untouched and @d
 * filled. The file must not be truncated while it is open (the mapping would
 * fault): the writer below replaces files by rename, never in place.
 */
int st_file_open(const char *path, struct st_file **ret_file, struct diag *d);
/*
 * Validate a file image held in memory (for fuzzing and tests). @label names
 * it in messages. The bytes are copied, so @buf may be freed afterwards.
 */
int st_file_open_memory(const void *buf, size_t len, const char *label,
			struct st_file **ret_file, struct diag *d);
/* NULL-safe; returns NULL. */
struct st_file *st_file_free(struct st_file *f);

const char *st_file_path(const struct st_file *f);
/* The file's size in bytes. */
uint64_t st_file_size(const struct st_file *f);
/* The header's JSON bytes (without the 8-byte length), inside the file's image. */
void st_file_header(const struct st_file *f, const void **ret_json, size_t *ret_len);
/* The byte offset in the file of tensor @t (one of @f's) data. */
uint64_t st_file_data_offset(const struct st_file *f, const struct st_tensor *t);
size_t st_file_tensor_count(const struct st_file *f);
/* Tensors in ascending order of their name. */
const struct st_tensor *st_file_tensor_at(const struct st_file *f, size_t i);
/* NULL when there is no tensor of that name. */
const struct st_tensor *st_file_find(const struct st_file *f, const char *name);
/* The value of a "__metadata__" key, or NULL. Strings live as long as @f. */
const char *st_file_metadata(const struct st_file *f, const char *key);
size_t st_file_metadata_count(const struct st_file *f);
/* The i-th entry in ascending order of key; outputs untouched when i is out of range. */
void st_file_metadata_at(const struct st_file *f, size_t i, const char **ret_key,
			 const char **ret_value);

/*
 * Convert a floating-point tensor (F32, F16, BF16, F64) to float32 into @dst,
 * which holds t->n_elements floats. -EINVAL (with a diag naming the tensor) for
 * another dtype.
 */
int st_tensor_to_f32(const struct st_tensor *t, float *dst, struct diag *d);
/*
 * The same for integer tensors (I32, I64, I16, I8, U8, and U16, U32, U64) into
 * int32, refusing (-EINVAL, diag naming the tensor and the element, @dst
 * untouched) a value out of range.
 */
int st_tensor_to_i32(const struct st_tensor *t, int32_t *dst, struct diag *d);

/*
 * A writer collects tensors (by pointer: the data must stay valid until
 * st_writer_write() returns) and metadata, then writes the file in one go: the
 * header padded with spaces to a multiple of 8, tensors in name order. It
 * writes PATH.tmp and renames it over @path, so a reader never sees half a file.
 */
struct st_writer;

int st_writer_new(struct st_writer **ret_writer);
struct st_writer *st_writer_free(struct st_writer *w);
/*
 * Copies @name and @shape. -EEXIST for a name already added; -EINVAL for an
 * empty or non-UTF-8 name, "__metadata__", an unknown dtype, more than
 * ST_MAX_DIMS dimensions, a size that overflows, or NULL data for a non-empty
 * tensor. Setting a metadata key again replaces its value.
 */
int st_writer_add(struct st_writer *w, const char *name, enum st_dtype dtype, unsigned ndim,
		  const uint64_t *shape, const void *data);
int st_writer_set_metadata(struct st_writer *w, const char *key, const char *value);
/* 0, or -errno with @d filled and no PATH.tmp left behind. */
int st_writer_write(struct st_writer *w, const char *path, struct diag *d);

/*
 * A tensor set: one checkpoint that may span several files. @path is a
 * .safetensors file, a model.safetensors.index.json (its "weight_map" names the
 * shard of each tensor, shards are resolved relative to the index's folder and
 * may not escape it), or a folder holding either (the index wins). Tensor names
 * must be unique across shards and each must be in the shard the index names.
 * Metadata: the union of the shards' "__metadata__" (first shard in index order
 * wins on a conflict).
 */
struct st_set;

/*
 * "Index order" is the order in which the weight_map first mentions each
 * shard. Tensors of a shard that the weight_map does not mention are still
 * part of the set. 0, or -errno with *ret_set untouched and @d filled.
 */
int st_set_open(const char *path, struct st_set **ret_set, struct diag *d);
struct st_set *st_set_free(struct st_set *s);
const struct st_tensor *st_set_find(const struct st_set *s, const char *name);
const char *st_set_metadata(const struct st_set *s, const char *key);
size_t st_set_file_count(const struct st_set *s);
const struct st_file *st_set_file_at(const struct st_set *s, size_t i);
/* The folder the set was opened from (where config.json would sit). */
const char *st_set_dir(const struct st_set *s);
/* Every tensor of the set, in ascending order of name. */
size_t st_set_tensor_count(const struct st_set *s);
const struct st_tensor *st_set_tensor_at(const struct st_set *s, size_t i);
/* The set's metadata in ascending order of key (after the first-shard-wins rule). */
size_t st_set_metadata_count(const struct st_set *s);
void st_set_metadata_at(const struct st_set *s, size_t i, const char **ret_key,
			const char **ret_value);
/*
 * Where @t (a tensor of @s) lives on disk: its file and the byte offset of its
 * data there. -ENOENT for a tensor of a set made by st_set_new_virtual().
 */
int st_set_tensor_file(const struct st_set *s, const struct st_tensor *t,
		       const struct st_file **ret_file, uint64_t *ret_offset);

/*
 * A set over tensors held elsewhere (moed's expert store), with no file
 * behind it. Names, shapes and metadata are copied; the data pointers are
 * kept as they are and must stay valid as long as the set; a NULL one is a
 * tensor whose values this process does not hold (an expert another host
 * computes): its shape is known, its data never read. n_elements and
 * n_bytes must agree with dtype and shape (-EINVAL otherwise, as are
 * duplicate names). @meta holds @n_meta key/value pairs, keys distinct.
 * @dir is where config.json would sit.
 */
int st_set_new_virtual(const char *dir, const struct st_tensor *tensors, size_t n_tensors,
		       const char *const (*meta)[2], size_t n_meta, struct st_set **ret_set,
		       struct diag *d);
