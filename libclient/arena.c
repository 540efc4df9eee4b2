/* SPDX-License-Identifier: MIT */
/*
 * arena: first-fit allocation with coalescing over a connection's buffer
 * arena (arena.h). A client holds a handful of long-lived buffers (inputs,
 * outputs, routing), so a sorted array of extents scanned linearly is both
 * the simplest structure and fast enough; a free lookup is a binary search.
 */
#include "arena.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int arena_init(struct arena *a, void *base, uint64_t size)
{
	struct arena_extent *ext;
	uint64_t usable = size & ~(uint64_t)(ARENA_ALIGN - 1);

	if (!a || !base || ((uintptr_t)base & (ARENA_ALIGN - 1)) != 0 || usable == 0)
		return -EINVAL;
	/* The arena must not wrap the address space: offsets become pointers. */
	if (usable > UINTPTR_MAX - (uintptr_t)base)
		return -EINVAL;

	ext = malloc(4 * sizeof(*ext));
	if (!ext)
		return -ENOMEM;
	ext[0] = (struct arena_extent){.off = 0, .len = usable, .used = false};
	*a = (struct arena){
		.base = base,
		.usable = usable,
		.ext = ext,
		.n_ext = 1,
		.cap_ext = 4,
	};
	return 0;
}

void arena_done(struct arena *a)
{
	if (!a)
		return;
	free(a->ext);
	a->ext = NULL;
	a->n_ext = 0;
	a->cap_ext = 0;
}

/* Make room for one more extent before anything is modified, so failure changes nothing. */
static int arena_ext_reserve(struct arena *a)
{
	struct arena_extent *ext;
	size_t cap;

	if (a->n_ext < a->cap_ext)
		return 0;
	if (a->cap_ext > SIZE_MAX / 2 / sizeof(*ext))
		return -ENOMEM;
	cap = a->cap_ext * 2;
	ext = realloc(a->ext, cap * sizeof(*ext));
	if (!ext)
		return -ENOMEM;
	a->ext = ext;
	a->cap_ext = cap;
	return 0;
}

static void arena_ext_remove(struct arena *a, size_t i)
{
	memmove(&a->ext[i], &a->ext[i + 1], (a->n_ext - i - 1) * sizeof(a->ext[0]));
	a->n_ext--;
}

int arena_buf_alloc(struct arena *a, size_t bytes, void **ret_ptr)
{
	uint64_t len;
	size_t i;
	int r;

	if (!a || !a->ext || !ret_ptr || bytes == 0)
		return -EINVAL;
	if (bytes > a->usable)
		return -ENOMEM;
	/* Cannot overflow: bytes <= usable, which is itself a multiple of ARENA_ALIGN. */
	len = ((uint64_t)bytes + ARENA_ALIGN - 1) & ~(uint64_t)(ARENA_ALIGN - 1);

	for (i = 0; i < a->n_ext; i++) {
		struct arena_extent *e = &a->ext[i];

		if (e->used || e->len < len)
			continue;
		if (e->len > len) {
			/* Split: the tail stays free, right after the new block. */
			r = arena_ext_reserve(a);
			if (r < 0)
				return r;
			e = &a->ext[i]; /* the array may have moved */
			memmove(&a->ext[i + 2], &a->ext[i + 1],
				(a->n_ext - i - 1) * sizeof(a->ext[0]));
			a->ext[i + 1] = (struct arena_extent){
				.off = e->off + len,
				.len = e->len - len,
				.used = false,
			};
			a->n_ext++;
			e->len = len;
		}
		e->used = true;
		*ret_ptr = a->base + e->off;
		return 0;
	}
	return -ENOMEM;
}

/* The extent starting exactly at @off, or -1. The extents are sorted by offset. */
static ptrdiff_t arena_ext_find(const struct arena *a, uint64_t off)
{
	size_t lo = 0, hi = a->n_ext;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (a->ext[mid].off == off)
			return (ptrdiff_t)mid;
		if (a->ext[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

int arena_buf_free(struct arena *a, void *ptr)
{
	uint64_t off;
	ptrdiff_t found;
	size_t i;

	if (!a || !a->ext || !ptr)
		return -EINVAL;
	if ((uintptr_t)ptr < (uintptr_t)a->base)
		return -EINVAL;
	off = (uintptr_t)ptr - (uintptr_t)a->base;
	if (off >= a->usable)
		return -EINVAL;
	found = arena_ext_find(a, off);
	if (found < 0 || !a->ext[found].used)
		return -EINVAL;
	i = (size_t)found;

	/* Merging only ever removes extents: nothing here can fail. */
	a->ext[i].used = false;
	if (i + 1 < a->n_ext && !a->ext[i + 1].used) {
		a->ext[i].len += a->ext[i + 1].len;
		arena_ext_remove(a, i + 1);
	}
	if (i > 0 && !a->ext[i - 1].used) {
		a->ext[i - 1].len += a->ext[i].len;
		arena_ext_remove(a, i);
	}
	return 0;
}

int arena_range_offset(const struct arena *a, const void *ptr, uint64_t len, uint64_t *ret_off)
{
	uint64_t off;

	if (!a || !ptr || !ret_off)
		return -EINVAL;
	if ((uintptr_t)ptr < (uintptr_t)a->base)
		return -EINVAL;
	off = (uintptr_t)ptr - (uintptr_t)a->base;
	/* off + len <= usable, written so that neither side can overflow. */
	if (off > a->usable || len > a->usable - off)
		return -EINVAL;
	*ret_off = off;
	return 0;
}
