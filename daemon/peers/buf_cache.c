/* SPDX-License-Identifier: MIT */
/* buf_cache: see buf_cache.h. */
#include "peers/buf_cache.h"

#include <stdlib.h>

void *buf_cache_get(struct buf_cache *c, size_t size)
{
	int best = -1;
	void *b;

	for (int i = 0; i < BUF_CACHE_SLOTS; i++)
		if (c->buf[i] && c->cap[i] >= size && (best < 0 || c->cap[i] < c->cap[best]))
			best = i;
	if (best < 0)
		return malloc(size ? size : 1);
	b = c->buf[best];
	c->buf[best] = NULL;
	return b;
}

void buf_cache_put(struct buf_cache *c, void *buf, size_t cap)
{
	int slot = -1;

	if (!buf)
		return;
	/* an empty slot, else the smallest kept buffer if this one is larger */
	for (int i = 0; i < BUF_CACHE_SLOTS; i++) {
		if (!c->buf[i]) {
			slot = i;
			break;
		}
		if (c->cap[i] < cap && (slot < 0 || c->cap[i] < c->cap[slot]))
			slot = i;
	}
	if (slot < 0) {
		free(buf);
		return;
	}
	free(c->buf[slot]);
	c->buf[slot] = buf;
	c->cap[slot] = cap;
}

void buf_cache_done(struct buf_cache *c)
{
	for (int i = 0; i < BUF_CACHE_SLOTS; i++) {
		free(c->buf[i]);
		c->buf[i] = NULL;
	}
}
