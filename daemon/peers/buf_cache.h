/* SPDX-License-Identifier: MIT */
/*
 * buf_cache: a few large buffers kept between uses.
 *
 * A served request (and a call) needs buffers of its rows, megabytes each.
 * glibc serves such sizes with mmap and unmaps them at free, so every
 * request faulted its pages in again: at 16 MiB per call the serving host
 * spent most of its time in page faults (bench_peers: 3.5x the throughput
 * once they were kept). The cache keeps up to BUF_CACHE_SLOTS freed buffers
 * and hands out the smallest one that fits.
 *
 * Not thread-safe: the caller serialises (the reactor thread, or a lock).
 */
#pragma once

#include <stddef.h>

#define BUF_CACHE_SLOTS 8

struct buf_cache {
	void *buf[BUF_CACHE_SLOTS];
	size_t cap[BUF_CACHE_SLOTS];
};

/* A buffer of at least @size bytes (kept or new), or NULL. */
void *buf_cache_get(struct buf_cache *c, size_t size);
/* Give back a buffer of @cap bytes from buf_cache_get() (NULL-safe): kept, or freed. */
void buf_cache_put(struct buf_cache *c, void *buf, size_t cap);
/* Free what is kept. */
void buf_cache_done(struct buf_cache *c);
