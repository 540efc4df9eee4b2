/* SPDX-License-Identifier: MIT */
/*
 * arena: libmoe's allocator for a connection's buffer arena, the part of the
 * shared region where request inputs, outputs and routing buffers live
 * (moe_abi.h). It hands out 64-byte aligned blocks first-fit and coalesces
 * on free. All of its bookkeeping lives in private memory: the arena is
 * writable by moed (it writes outputs there), so nothing the allocator relies
 * on may be stored inside it, and the allocator never reads or writes a byte
 * of the arena itself (a reconnect may leave the range inaccessible).
 *
 * Internal to libmoe; a header of its own so that the unit test can build
 * arena.c alone.
 *
 * Thread-safety: none; one struct arena is used by one thread at a time (as
 * the struct moe_client that owns it).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARENA_ALIGN 64 /* MOE_ARENA_ALIGN: every offset an SQE names */

/*
 * One extent of the arena. The extents are kept sorted by offset and tile
 * [0, usable) exactly, and no two neighbours are both free (free merges
 * them), so the array is at most usable / ARENA_ALIGN long.
 */
struct arena_extent {
	uint64_t off;
	uint64_t len;
	bool used;
};

struct arena {
	uint8_t *base;
	uint64_t usable; /* the arena's size rounded down to ARENA_ALIGN */
	struct arena_extent *ext;
	size_t n_ext;
	size_t cap_ext;
};

/*
 * Manage [@base, @base + @size) as one free extent. @base must be
 * ARENA_ALIGN-aligned and @size at least ARENA_ALIGN. 0, -EINVAL or -ENOMEM
 * (bookkeeping); @a is untouched on failure.
 */
int arena_init(struct arena *a, void *base, uint64_t size);

/* Free the bookkeeping (not the arena, which the region owns). NULL-safe, idempotent. */
void arena_done(struct arena *a);

/*
 * First-fit allocation of @bytes rounded up to ARENA_ALIGN. 0 and the block in
 * *@ret_ptr; -EINVAL for 0 bytes, -ENOMEM when no free extent is large enough
 * (or the bookkeeping cannot grow); the arena is unchanged on failure.
 */
int arena_buf_alloc(struct arena *a, size_t bytes, void **ret_ptr);

/*
 * Return the block at @ptr, merging it with free neighbours. 0, or -EINVAL
 * when @ptr is not the start of an allocated block (a double free, a foreign
 * pointer); the arena is unchanged then.
 */
int arena_buf_free(struct arena *a, void *ptr);

/*
 * The offset of [@ptr, @ptr + @len) from the arena's base, when the whole
 * range lies inside the arena (overflow-safe; @len may be 0). 0 and the
 * offset in *@ret_off, or -EINVAL. Whether the range is allocated is not
 * checked: a request may name any part of a buffer.
 */
int arena_range_offset(const struct arena *a, const void *ptr, uint64_t len, uint64_t *ret_off);
