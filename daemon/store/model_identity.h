/* SPDX-License-Identifier: MIT */
/*
 * model_identity: what the expert store compares before it re-attaches.
 *
 * - The identity of a checkpoint: XXH3-128 over its files in set order, each
 *   as (size, header length, header JSON). A safetensors header names every
 *   tensor with its dtype, shape and byte range: the identity ties a store's
 *   objects to each other and to one checkpoint layout, and says in the
 *   status which model a store holds.
 * - A file's fingerprint: (device, inode, size, mtime in ns) from stat(),
 *   which needs no read permission. Weights rewritten with the same names
 *   and shapes keep the identity but not the fingerprint (a new inode
 *   after a rename, a new mtime after a write), so the fingerprints, not
 *   the identity, decide whether a restart may re-attach.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <xxhash.h>

#include "model/safetensors.h"

#define MODEL_IDENTITY_BYTES 16

struct file_print {
	uint64_t dev, ino, size;
	int64_t mtime_ns;
};

void model_identity(const struct st_set *s, uint8_t out[MODEL_IDENTITY_BYTES]);

/* Feed @v to @st as 8 little-endian bytes (the same hash on every host). */
void model_identity_hash_u64(XXH3_state_t *st, uint64_t v);

/* Hex of an identity into @buf (2 * MODEL_IDENTITY_BYTES + 1 bytes). */
void model_identity_hex(const uint8_t id[MODEL_IDENTITY_BYTES], char *buf);

/* stat() @path into @p. 0 or -errno. */
int file_print_of(const char *path, struct file_print *p);

static inline bool file_print_equal(const struct file_print *a, const struct file_print *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns;
}
