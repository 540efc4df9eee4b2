/* SPDX-License-Identifier: MIT */
/*
 * placement: the map's life cycle (make, clone, replicas, free), the
 * interleave policy and the policy names. The balanced and explicit policies
 * have files of their own.
 */
#include "placement/placement.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "placement/placement_internal.h"
#include "util/parse.h"

/* expert_place.node[] is a uint8_t index into topology.nodes[] */
_Static_assert(TOPOLOGY_MAX_NODES <= 256, "node indices must fit expert_place.node[]");

/* in the order of enum placement_policy */
static const char *const policy_names[] = { "balanced", "interleave", "explicit", NULL };

int placement_policy_from_name(const char *name, enum placement_policy *ret)
{
	int r = parse_name(name, policy_names);

	if (r < 0)
		return r;
	*ret = (enum placement_policy)r;
	return 0;
}

const char *placement_policy_name(enum placement_policy p)
{
	if ((unsigned)p >= sizeof(policy_names) / sizeof(policy_names[0]) - 1)
		return "unknown";
	return policy_names[p];
}

struct placement *placement_free(struct placement *p)
{
	if (!p)
		return NULL;
	/* a half-built placement has NULL experts arrays past the failure */
	for (uint32_t l = 0; p->layers && l < p->n_layers; l++)
		free(p->layers[l].experts);
	free(p->layers);
	free(p);
	return NULL;
}

/* A placement with every layer's experts array allocated and zeroed. */
static struct placement *placement_alloc(uint32_t n_layers, const uint32_t *n_experts,
					 uint32_t n_nodes)
{
	struct placement *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->n_layers = n_layers;
	p->n_nodes = n_nodes;
	p->layers = calloc(n_layers ? n_layers : 1, sizeof(*p->layers));
	if (!p->layers)
		return placement_free(p);
	for (uint32_t l = 0; l < n_layers; l++) {
		if (!n_experts[l])
			continue;
		p->layers[l].experts = calloc(n_experts[l], sizeof(*p->layers[l].experts));
		if (!p->layers[l].experts)
			return placement_free(p);
		p->layers[l].n_experts = n_experts[l];
	}
	return p;
}

static void placement_interleave_fill(struct placement *p)
{
	for (uint32_t l = 0; l < p->n_layers; l++)
		for (uint32_t e = 0; e < p->layers[l].n_experts; e++)
			expert_place_set(&p->layers[l].experts[e], e % p->n_nodes);
}

static int placement_input_check(const struct placement_input *in, struct diag *d)
{
	if (!in || !in->topo)
		return diag_set(d, -EINVAL, "placement: no topology");
	if (in->topo->n_nodes < 1 || in->topo->n_nodes > TOPOLOGY_MAX_NODES)
		return diag_set(d, -EINVAL, "placement: topology of %u nodes", in->topo->n_nodes);
	if (in->n_layers && !in->n_experts)
		return diag_set(d, -EINVAL, "placement: no expert counts");
	if ((unsigned)in->policy > PLACEMENT_EXPLICIT)
		return diag_set(d, -EINVAL, "placement: unknown policy %d", (int)in->policy);
	return 0;
}

int placement_make(const struct placement_input *in, struct placement **ret, struct diag *d)
{
	struct placement *p;
	int r;

	r = placement_input_check(in, d);
	if (r < 0)
		return r;
	p = placement_alloc(in->n_layers, in->n_experts, in->topo->n_nodes);
	if (!p)
		return diag_set(d, -ENOMEM, "placement: out of memory");
	p->epoch = 1;
	switch (in->policy) {
	case PLACEMENT_INTERLEAVE:
		placement_interleave_fill(p);
		r = 0;
		break;
	case PLACEMENT_BALANCED:
		r = placement_balanced_fill(in, p, d);
		break;
	case PLACEMENT_EXPLICIT:
		r = placement_explicit_fill(in, p, d);
		break;
	}
	if (r < 0) {
		placement_free(p);
		return r;
	}
	*ret = p;
	return 0;
}

int placement_clone(const struct placement *p, struct placement **ret)
{
	uint32_t *n_experts;
	struct placement *c;

	n_experts = calloc(p->n_layers ? p->n_layers : 1, sizeof(*n_experts));
	if (!n_experts)
		return -ENOMEM;
	for (uint32_t l = 0; l < p->n_layers; l++)
		n_experts[l] = p->layers[l].n_experts;
	c = placement_alloc(p->n_layers, n_experts, p->n_nodes);
	free(n_experts);
	if (!c)
		return -ENOMEM;
	for (uint32_t l = 0; l < p->n_layers; l++)
		if (p->layers[l].n_experts)
			memcpy(c->layers[l].experts, p->layers[l].experts,
			       p->layers[l].n_experts * sizeof(*p->layers[l].experts));
	c->epoch = p->epoch + 1;
	*ret = c;
	return 0;
}

/* The slot of @node among @e's copies, or -ENOENT. */
static int copy_slot(const struct expert_place *e, uint32_t node)
{
	for (uint32_t i = 0; i < e->n_copies; i++)
		if (e->node[i] == node)
			return (int)i;
	return -ENOENT;
}

/* Remove slot @i, keeping the order of the others. */
static void copy_remove(struct expert_place *e, uint32_t i)
{
	memmove(&e->node[i], &e->node[i + 1], (size_t)(e->n_copies - i - 1) * sizeof(e->node[0]));
	e->n_copies--;
}

/* The place of (@layer, @expert) when it and @node are in range, else NULL. */
static struct expert_place *place_at(struct placement *p, uint32_t layer, uint32_t expert,
				     uint32_t node)
{
	if (layer >= p->n_layers || expert >= p->layers[layer].n_experts || node >= p->n_nodes)
		return NULL;
	return &p->layers[layer].experts[expert];
}

int placement_add_replica(struct placement *p, uint32_t layer, uint32_t expert, uint32_t node)
{
	struct expert_place *e = place_at(p, layer, expert, node);

	if (!e)
		return -EINVAL;
	if (copy_slot(e, node) >= 0)
		return -EEXIST;
	if (e->n_copies >= PLACEMENT_MAX_COPIES)
		return -E2BIG;
	e->node[e->n_copies++] = (uint8_t)node;
	return 0;
}

int placement_move(struct placement *p, uint32_t layer, uint32_t expert, uint32_t node)
{
	struct expert_place *e = place_at(p, layer, expert, node);
	int slot;

	if (!e)
		return -EINVAL;
	slot = copy_slot(e, node);
	if (slot == 0)
		return -EEXIST;
	if (slot > 0)
		copy_remove(e, (uint32_t)slot);
	e->node[0] = (uint8_t)node;
	return 0;
}

int placement_drop_copy(struct placement *p, uint32_t layer, uint32_t expert, uint32_t node)
{
	struct expert_place *e = place_at(p, layer, expert, node);
	int slot;

	if (!e)
		return -EINVAL;
	slot = copy_slot(e, node);
	if (slot < 0)
		return slot;
	if (e->n_copies == 1)
		return -EPERM;
	copy_remove(e, (uint32_t)slot);
	return 0;
}

void placement_add_node_load(const struct placement *p, uint32_t layer, const uint64_t *tokens,
			     uint32_t n_experts, double *node_load)
{
	const struct layer_place *lp = &p->layers[layer];

	for (uint32_t e = 0; e < lp->n_experts && e < n_experts; e++) {
		const struct expert_place *ep = &lp->experts[e];

		for (uint32_t c = 0; c < ep->n_copies; c++)
			node_load[ep->node[c]] += (double)tokens[e] / ep->n_copies;
	}
}
