/* SPDX-License-Identifier: MIT */
/*
 * placement_balanced: greedy longest-processing-time placement.
 *
 * Layers run one after another, so what must be even is each layer's work
 * over the nodes: the weight (load x bytes) is balanced per layer. Memory is
 * shared by all layers, so the bytes a node holds accumulate over layers;
 * they break weight ties, which spreads equal experts of successive layers
 * over the nodes the earlier layers used least, and they are what a node's
 * mem_total limits. Example, 2 layers of 6 equal experts on 4 nodes: layer 0
 * goes to nodes 0 1 2 3 0 1, layer 1 to 2 3 0 1 2 3, 3 experts per node.
 *
 * Sorting by descending weight with the expert index as the last key and
 * comparing exactly keeps the result a function of the inputs alone.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "placement/placement_internal.h"

struct ranked_expert {
	double weight;
	uint32_t expert;
};

static int ranked_cmp(const void *a, const void *b)
{
	const struct ranked_expert *x = a, *y = b;

	if (x->weight != y->weight)
		return x->weight > y->weight ? -1 : 1;
	return x->expert < y->expert ? -1 : x->expert > y->expert;
}

/* The layer's experts by descending weight; load 1 when nothing was measured. */
static int layer_rank(const struct placement_input *in, uint32_t l, struct ranked_expert *ranked,
		      struct diag *d)
{
	const double *load = in->load ? in->load[l] : NULL;

	for (uint32_t e = 0; e < in->n_experts[l]; e++) {
		double x = load ? load[e] : 1.0;

		if (!isfinite(x) || x < 0)
			return diag_set(d, -EINVAL,
					"balanced placement: layer %u expert %u: load %g is not a "
					"finite number >= 0",
					l, e, x);
		ranked[e].weight = x * (double)in->bytes[l][e];
		ranked[e].expert = e;
	}
	qsort(ranked, in->n_experts[l], sizeof(*ranked), ranked_cmp);
	return 0;
}

struct node_fill {
	double weight;  /* of the current layer */
	uint64_t bytes; /* over every layer so far */
};

/* Least weight, then fewest bytes, then lowest index, among nodes with room; or -1. */
static int node_pick(const struct topology *t, const struct node_fill *fill, uint64_t bytes)
{
	int best = -1;

	for (uint32_t n = 0; n < t->n_nodes; n++) {
		uint64_t mem = t->nodes[n].mem_total;

		if (mem && (fill[n].bytes > mem || bytes > mem - fill[n].bytes))
			continue;
		if (best < 0 || fill[n].weight < fill[best].weight ||
		    (fill[n].weight == fill[best].weight && fill[n].bytes < fill[best].bytes))
			best = (int)n;
	}
	return best;
}

static int layer_place(const struct placement_input *in, uint32_t l,
		       const struct ranked_expert *ranked, struct node_fill *fill,
		       struct placement *p, struct diag *d)
{
	for (uint32_t n = 0; n < in->topo->n_nodes; n++)
		fill[n].weight = 0;
	for (uint32_t i = 0; i < in->n_experts[l]; i++) {
		uint32_t e = ranked[i].expert;
		uint64_t bytes = in->bytes[l][e];
		int node = node_pick(in->topo, fill, bytes);

		if (node < 0)
			return diag_set(d, -ENOSPC,
					"balanced placement: layer %u expert %u (%llu bytes) fits "
					"on no node: the experts exceed the nodes' memory",
					l, e, (unsigned long long)bytes);
		fill[node].weight += ranked[i].weight;
		fill[node].bytes += bytes;
		expert_place_set(&p->layers[l].experts[e], (uint32_t)node);
	}
	return 0;
}

int placement_balanced_fill(const struct placement_input *in, struct placement *p, struct diag *d)
{
	struct node_fill fill[TOPOLOGY_MAX_NODES] = { 0 };
	struct ranked_expert *ranked = NULL;
	uint32_t max_experts = 0;
	int r = 0;

	if (in->n_layers && !in->bytes)
		return diag_set(d, -EINVAL, "balanced placement: no expert sizes (bytes)");
	for (uint32_t l = 0; l < in->n_layers; l++) {
		if (in->n_experts[l] && !in->bytes[l])
			return diag_set(d, -EINVAL, "balanced placement: layer %u: no expert sizes",
					l);
		if (in->n_experts[l] > max_experts)
			max_experts = in->n_experts[l];
	}
	ranked = calloc(max_experts ? max_experts : 1, sizeof(*ranked));
	if (!ranked)
		return diag_set(d, -ENOMEM, "balanced placement: out of memory");
	for (uint32_t l = 0; l < in->n_layers && r == 0; l++) {
		r = layer_rank(in, l, ranked, d);
		if (r == 0)
			r = layer_place(in, l, ranked, fill, p, d);
	}
	free(ranked);
	return r;
}
