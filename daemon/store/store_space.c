/* SPDX-License-Identifier: MIT */
/*
 * store_space: the spare space of each node object, where changes put the
 * copies they make (replicas, moved experts). A sorted free list per node,
 * first fit, neighbours merged on free: changes are rare and copies few, so
 * a list beats anything cleverer in code. Extents are whole pages, so that
 * two copies never share a page (and a page's node is one copy's).
 */
#include "store/store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SPACE_UNIT 4096u

static uint64_t round_up(uint64_t n)
{
	return (n + SPACE_UNIT - 1) / SPACE_UNIT * SPACE_UNIT;
}

int store_space_init(struct expert_store *s, uint32_t node, uint64_t begin, uint64_t end)
{
	struct store_space *sp = &s->space[node];

	begin = round_up(begin);
	*sp = (struct store_space){ .begin = begin, .end = end > begin ? end : begin };
	if (sp->end == sp->begin)
		return 0;
	sp->free = malloc(sizeof(*sp->free) * 8);
	if (!sp->free)
		return -ENOMEM;
	sp->cap = 8;
	sp->free[0] = (struct store_extent){ begin, sp->end - begin };
	sp->n_free = 1;
	return 0;
}

void store_space_done(struct expert_store *s)
{
	for (uint32_t n = 0; n < TOPOLOGY_MAX_NODES; n++) {
		free(s->space[n].free);
		memset(&s->space[n], 0, sizeof(s->space[n]));
	}
}

int store_space_alloc(struct expert_store *s, uint32_t node, uint64_t bytes, uint64_t *ret_off)
{
	struct store_space *sp = &s->space[node];
	int r = -ENOSPC;

	bytes = round_up(bytes ? bytes : 1);
	pthread_mutex_lock(&s->space_lock);
	for (size_t i = 0; i < sp->n_free; i++) {
		struct store_extent *x = &sp->free[i];

		if (x->bytes < bytes)
			continue;
		*ret_off = x->offset;
		x->offset += bytes;
		x->bytes -= bytes;
		if (x->bytes == 0) {
			memmove(x, x + 1, sizeof(*x) * (sp->n_free - i - 1));
			sp->n_free--;
		}
		sp->used += bytes;
		r = 0;
		break;
	}
	pthread_mutex_unlock(&s->space_lock);
	return r;
}

/*
 * Insert [offset, offset + bytes) at its place, merged with its neighbours.
 * Without memory for one more entry the extent is lost to this store's
 * life (a few pages until the next load; it stays counted as used, so the
 * status does not promise room there is not), never reused twice.
 */
void store_space_free(struct expert_store *s, uint32_t node, uint64_t offset, uint64_t bytes)
{
	struct store_space *sp = &s->space[node];
	size_t i = 0;

	bytes = round_up(bytes ? bytes : 1);
	pthread_mutex_lock(&s->space_lock);
	while (i < sp->n_free && sp->free[i].offset < offset)
		i++;
	if (i > 0 && sp->free[i - 1].offset + sp->free[i - 1].bytes == offset) {
		sp->free[i - 1].bytes += bytes;
		if (i < sp->n_free && offset + bytes == sp->free[i].offset) {
			sp->free[i - 1].bytes += sp->free[i].bytes;
			memmove(&sp->free[i], &sp->free[i + 1],
				sizeof(*sp->free) * (sp->n_free - i - 1));
			sp->n_free--;
		}
	} else if (i < sp->n_free && offset + bytes == sp->free[i].offset) {
		sp->free[i].offset = offset;
		sp->free[i].bytes += bytes;
	} else {
		if (sp->n_free == sp->cap) {
			size_t cap = sp->cap ? 2 * sp->cap : 8;
			struct store_extent *f = realloc(sp->free, sizeof(*f) * cap);

			if (!f)
				goto out; /* lost, and still counted as used */
			sp->free = f;
			sp->cap = cap;
		}
		memmove(&sp->free[i + 1], &sp->free[i], sizeof(*sp->free) * (sp->n_free - i));
		sp->free[i] = (struct store_extent){ offset, bytes };
		sp->n_free++;
	}
	sp->used -= bytes;
out:
	pthread_mutex_unlock(&s->space_lock);
}

void expert_store_replica_space(struct expert_store *s, uint32_t node, uint64_t *ret_used,
				uint64_t *ret_budget)
{
	const struct store_space *sp = &s->space[node];

	pthread_mutex_lock(&s->space_lock);
	*ret_used = sp->used;
	*ret_budget = sp->end - sp->begin;
	pthread_mutex_unlock(&s->space_lock);
}
