/* SPDX-License-Identifier: MIT */
/*
 * model_identity: what the expert store compares before it re-attaches.
 *
 * - The identity of a checkpoint: XXH3-128 over its files in set order, each
 *   as (size, header length, header JSON). A safetensors header names every
 *   tensor with its dtype, shape and byte range, so two checkpoints with the
 *   same identity differ at most in weight values written in place without
 *   changing the file's size: which the fingerprint below catches as well.
 * - A file's fingerprint: (device, inode, size, mtime in ns) from stat(),
 *   which needs no read permission. A restart whose files all keep their
 *   fingerprints re-attaches without opening them; otherwise the headers
 *   are read and the identity decides.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "model/safetensors.h"

#define MODEL_IDENTITY_BYTES 16

struct file_print {
	uint64_t dev, ino, size;
	int64_t mtime_ns;
};

void model_identity(const struct st_set *s, uint8_t out[MODEL_IDENTITY_BYTES]);

/* Hex of an identity into @buf (2 * MODEL_IDENTITY_BYTES + 1 bytes). */
void model_identity_hex(const uint8_t id[MODEL_IDENTITY_BYTES], char *buf);

/* stat() @path into @p. 0 or -errno. */
int file_print_of(const char *path, struct file_print *p);

static inline bool file_print_equal(const struct file_print *a, const struct file_print *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns;
}
