/* SPDX-License-Identifier: MIT */
/*
 * engine_homes: expert tiles grouped by the node that holds their weights;
 * see engine_homes.h.
 *
 * Why the result cannot change: a tile's rows, columns and the buffers it
 * writes are fixed by the plan before grouping, each output element belongs
 * to exactly one tile, and every copy of an expert holds the same bytes
 * (checked for shape here; for content it is the placement's promise). So
 * grouping only changes which thread runs a tile and which copy of the
 * bytes it reads.
 */
#include "engine_homes.h"

#include <errno.h>
#include <string.h>

#include "compute/activations.h"

/* Copy @ci of expert @e: present and shaped as the layer's own weights? */
static int copy_check(const struct moe_layer *L, bool gated, uint32_t e, uint32_t ci,
		      const struct ffn_weights *f, struct diag *d)
{
	const struct ffn_weights *own = &L->experts[e].ffn;

	if (!f)
		return diag_set(d, -EINVAL, "layer %u expert %u: copy %u has no weights",
				L->index, e, ci);
	if (f->d_ff != own->d_ff || !f->w1 || !f->w2 || (gated && !f->w3))
		return diag_set(d, -EINVAL,
				"layer %u expert %u: copy %u has d_ff %u%s, the expert %u with "
				"w1, w2%s",
				L->index, e, ci, f->d_ff, f->w1 && f->w2 ? "" : " and lacks w1 or w2",
				own->d_ff, gated ? ", w3" : "");
	if (f->dtype != own->dtype)
		return diag_set(d, -EINVAL, "layer %u expert %u: copy %u holds %s weights, the "
					    "expert %s",
				L->index, e, ci, weight_dtype_name(f->dtype),
				weight_dtype_name(own->dtype));
	if (!f->b1 != !own->b1 || !f->b2 != !own->b2)
		return diag_set(d, -EINVAL, "layer %u expert %u: copy %u's biases differ from "
					    "the expert's",
				L->index, e, ci);
	return 0;
}

int engine_homes_check(const struct moe_layer *L, const struct router_config *cfg,
		       const struct expert_home *homes, struct diag *d)
{
	bool gated = activation_is_gated(cfg->activation);

	for (uint32_t e = 0; e < L->n_experts; e++) {
		const struct expert_home *h = &homes[e];

		if (moe_expert_held_elsewhere(&L->experts[e]))
			continue; /* no copy to check: it never computes here */
		if (h->n_copies < 1 || h->n_copies > PLACEMENT_MAX_COPIES)
			return diag_set(d, -EINVAL, "layer %u expert %u: %u copies, not 1..%u",
					L->index, e, h->n_copies, PLACEMENT_MAX_COPIES);
		for (uint32_t ci = 0; ci < h->n_copies; ci++) {
			int r = copy_check(L, gated, e, ci, h->copy[ci].ffn, d);

			if (r < 0)
				return r;
		}
	}
	return 0;
}

/*
 * Where tile @i of @in runs and which weights it reads. @nth counts the
 * tiles of the same bin before it (tiles are bin-major).
 */
static uint32_t tile_place(const struct ffn_tile *t, uint32_t nth, const struct expert_home *homes,
			   uint32_t n_experts, uint32_t n_nodes, const struct ffn_weights **ret_ffn)
{
	const struct expert_copy *cp;

	if (t->bin >= n_experts) {
		/* the shared expert has no home: every node takes a share */
		*ret_ffn = t->ffn;
		return nth % n_nodes;
	}
	cp = &homes[t->bin].copy[nth % homes[t->bin].n_copies];
	*ret_ffn = cp->ffn;
	return cp->node < n_nodes ? cp->node : 0;
}

/*
 * Two passes of a counting sort, which keeps each node's tiles in their
 * order: count per node, prefix sums, then place. The node of each tile is
 * computed in both passes rather than stored: it is a few loads.
 */
void engine_tiles_by_node(const struct ffn_tile *in, size_t n, const struct expert_home *homes,
			  uint32_t n_experts, uint32_t n_nodes, struct ffn_tile *out,
			  uint32_t *node_end)
{
	const struct ffn_weights *ffn;
	uint32_t nth = 0;

	memset(node_end, 0, sizeof(*node_end) * n_nodes);
	for (size_t i = 0; i < n; i++) {
		nth = i > 0 && in[i].bin == in[i - 1].bin ? nth + 1 : 0;
		node_end[tile_place(&in[i], nth, homes, n_experts, n_nodes, &ffn)]++;
	}
	/* node_end[k] = where node k's tiles begin, for now */
	for (uint32_t k = 0, begin = 0; k < n_nodes; k++) {
		uint32_t count = node_end[k];

		node_end[k] = begin;
		begin += count;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t node;

		nth = i > 0 && in[i].bin == in[i - 1].bin ? nth + 1 : 0;
		node = tile_place(&in[i], nth, homes, n_experts, n_nodes, &ffn);
		out[node_end[node]] = in[i];
		out[node_end[node]++].ffn = ffn;
	}
	/* each node's cursor stopped at its end */
}
