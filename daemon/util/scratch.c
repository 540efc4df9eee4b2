/* SPDX-License-Identifier: MIT */
/* scratch: per-batch bump allocation that settles into zero mallocs; see scratch.h. */
#include "scratch.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct scratch_chunk {
	struct scratch_chunk *next;
	char data[] __attribute__((aligned(SCRATCH_ALIGN)));
};

static size_t round_up(size_t n)
{
	return (n + SCRATCH_ALIGN - 1) & ~(size_t)(SCRATCH_ALIGN - 1);
}

void *scratch_alloc(struct scratch *s, size_t bytes)
{
	struct scratch_chunk *c;
	size_t need = round_up(bytes ? bytes : 1);

	if (need < bytes)
		return NULL;
	if (s->base && s->size - s->used >= need) {
		void *p = s->base + s->used;

		s->used += need;
		return p;
	}
	if (need > SIZE_MAX - sizeof(*c) - SCRATCH_ALIGN)
		return NULL;
	c = aligned_alloc(SCRATCH_ALIGN, round_up(sizeof(*c) + need));
	if (!c)
		return NULL;
	c->next = s->overflow;
	s->overflow = c;
	s->overflow_bytes += need;
	return c->data;
}

void *scratch_calloc(struct scratch *s, size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size)
		return NULL;
	p = scratch_alloc(s, n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}

void scratch_reset(struct scratch *s)
{
	size_t peak = s->used + s->overflow_bytes;

	while (s->overflow) {
		struct scratch_chunk *next = s->overflow->next;

		free(s->overflow);
		s->overflow = next;
	}
	if (s->overflow_bytes) {
		/* Grow with headroom so that a slowly growing batch size does not
		 * reallocate on every batch. */
		size_t size = round_up(peak + peak / 4);
		char *base = aligned_alloc(SCRATCH_ALIGN, size);

		if (base) {
			free(s->base);
			s->base = base;
			s->size = size;
		}
	}
	s->overflow_bytes = 0;
	s->used = 0;
}

void scratch_done(struct scratch *s)
{
	scratch_reset(s);
	free(s->base);
	*s = (struct scratch){ 0 };
}
