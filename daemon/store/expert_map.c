/* SPDX-License-Identifier: MIT */
/*
 * expert_map: the store's map of which copies serve each expert, by epoch;
 * see expert_store.h.
 *
 * A map owns its placement and homes. The copies a change made (struct
 * store_replica, in a node's spare space) are shared by every map that
 * uses them and counted: a map takes a reference on each when it is built
 * and drops them when its last user lets go, and the last drop returns the
 * copy's bytes to the node's free space. The copies the load made are the
 * model's own weights and are never freed while the store is open.
 *
 * Locking: `map_lock` guards the store's current-map pointer only; taking a
 * reference and publishing a map hold it for a few instructions. A map's
 * reference count is atomic, so a run lets go of its map without a lock.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint64_t expert_map_epoch(const struct expert_map *m)
{
	return m->placement->epoch;
}

const struct placement *expert_map_placement(const struct expert_map *m)
{
	return m->placement;
}

const struct expert_home *expert_map_homes(const struct expert_map *m, uint32_t layer)
{
	return layer < m->n_homes ? m->homes[layer] : NULL;
}

struct expert_map *expert_store_map_get(struct expert_store *s)
{
	struct expert_map *m;

	pthread_mutex_lock(&s->map_lock);
	m = s->map;
	atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	pthread_mutex_unlock(&s->map_lock);
	return m;
}

void store_replica_put(struct expert_store *s, struct store_replica *rep)
{
	if (atomic_fetch_sub_explicit(&rep->refs, 1, memory_order_acq_rel) != 1)
		return;
	store_space_free(s, rep->node, rep->offset, rep->bytes);
	free(rep);
}

static void map_free(struct expert_map *m)
{
	for (size_t i = 0; i < m->n_replicas; i++)
		store_replica_put(m->store, m->replicas[i]);
	free(m->replicas);
	for (uint32_t l = 0; m->homes && l < m->n_homes; l++)
		free(m->homes[l]);
	free(m->homes);
	placement_free(m->placement);
	free(m);
}

struct expert_map *expert_map_put(struct expert_map *m)
{
	/* the last user's put orders every reader's loads before the free */
	if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
		map_free(m);
	return NULL;
}

struct expert_map *store_map_publish(struct expert_store *s, struct expert_map *next)
{
	struct expert_map *old;

	pthread_mutex_lock(&s->map_lock);
	old = s->map;
	s->map = next;
	pthread_mutex_unlock(&s->map_lock);
	return expert_map_put(old);
}

/* The loaded copy of expert @e of layer @l on @node, or NULL when the load put none there. */
static const struct ffn_weights *loaded_copy(const struct expert_store *s, uint32_t l, uint32_t e,
					     uint32_t node)
{
	const struct moe_layer *L = moe_model_layer(s->model, l);

	return s->loaded_node[l][e] == node ? &L->experts[e].ffn : NULL;
}

/* The replica of (@l, @e) on @node among @reps, or NULL. */
static struct store_replica *replica_find(struct store_replica *const *reps, size_t n, uint32_t l,
					  uint32_t e, uint32_t node)
{
	for (size_t i = 0; i < n; i++)
		if (reps[i]->layer == l && reps[i]->expert == e && reps[i]->node == node)
			return reps[i];
	return NULL;
}

int store_map_build(struct expert_store *s, struct placement *p, struct store_replica *const *reps,
		    size_t n_reps, struct expert_map **ret_map, struct diag *d)
{
	uint32_t n_layers = moe_model_n_layers(s->model);
	struct expert_map *m = calloc(1, sizeof(*m));

	if (!m) {
		placement_free(p);
		return diag_set(d, -ENOMEM, "out of memory");
	}
	atomic_init(&m->refs, 1);
	m->store = s;
	m->placement = p;
	m->homes = calloc(n_layers ?: 1, sizeof(*m->homes));
	m->replicas = calloc(n_reps ?: 1, sizeof(*m->replicas));
	if (!m->homes || !m->replicas)
		goto oom;
	m->n_homes = n_layers;
	for (uint32_t l = 0; l < n_layers; l++) {
		const struct moe_layer *L = moe_model_layer(s->model, l);

		if (!L || L->router.kind == ROUTER_BASE)
			continue; /* BASE experts run on every worker: no homes */
		m->homes[l] = calloc(L->n_experts, sizeof(*m->homes[l]));
		if (!m->homes[l])
			goto oom;
		for (uint32_t e = 0; e < L->n_experts; e++) {
			const struct expert_place *ep = &p->layers[l].experts[e];
			struct expert_home *h = &m->homes[l][e];

			h->n_copies = ep->n_copies;
			for (uint32_t c = 0; c < ep->n_copies; c++) {
				struct store_replica *rep;
				const struct ffn_weights *f = loaded_copy(s, l, e, ep->node[c]);

				if (!f) {
					rep = replica_find(reps, n_reps, l, e, ep->node[c]);
					if (!rep) {
						map_free(m);
						return diag_set(d, -EINVAL, "layer %u expert %u: no "
							"bytes for its copy on node %u", l, e,
							ep->node[c]);
					}
					atomic_fetch_add_explicit(&rep->refs, 1,
								  memory_order_relaxed);
					m->replicas[m->n_replicas++] = rep;
					f = &rep->ffn;
				}
				h->copy[c].node = ep->node[c];
				h->copy[c].ffn = f;
			}
		}
	}
	*ret_map = m;
	return 0;
oom:
	map_free(m);
	return diag_set(d, -ENOMEM, "out of memory");
}

bool expert_store_is_remote(const struct expert_store *s, uint32_t layer, uint32_t expert)
{
	return layer < s->n_loaded_layers && s->remote[layer] && s->remote[layer][expert];
}

uint32_t expert_store_loaded_node(const struct expert_store *s, uint32_t layer, uint32_t expert)
{
	return s->loaded_node[layer][expert];
}
