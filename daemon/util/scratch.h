/* SPDX-License-Identifier: MIT */
/*
 * scratch: a bump allocator for the temporaries of one batch.
 *
 * A batch asks for its buffers (logits, routing, sorted rows, activations)
 * with scratch_alloc(); scratch_reset() frees them all at once. The first
 * batches of a new size fall back to malloc for what does not fit; reset then
 * grows the main block to the high-water mark, so a steady stream of batches
 * allocates nothing (the hot-path rule of STYLE 14).
 *
 * Thread-safety: one owner; not for concurrent use.
 */
#pragma once

#include <stddef.h>

struct scratch_chunk;

struct scratch {
	char *base;
	size_t size, used;
	size_t overflow_bytes;          /* bytes served from chunks since the last reset */
	struct scratch_chunk *overflow; /* list of malloc'd chunks */
};

#define SCRATCH_ALIGN 64

/* Zeroed-struct initialisation is valid: `struct scratch s = {0};` */
/* A 64-byte aligned block of @bytes (0 gives a valid unique pointer), or NULL on OOM. */
void *scratch_alloc(struct scratch *s, size_t bytes);
/* The same, zero-filled; n * size checked for overflow. */
void *scratch_calloc(struct scratch *s, size_t n, size_t size);
/* Forget every allocation; grow the main block to the peak if it overflowed. */
void scratch_reset(struct scratch *s);
void scratch_done(struct scratch *s);
