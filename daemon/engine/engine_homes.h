/* SPDX-License-Identifier: MIT */
/*
 * engine_homes: the engine's expert tiles placed on the nodes that hold
 * their experts' weights (engine_batch.homes), and the checks of those
 * homes. Internal to engine/.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* One task of an expert phase: a block of a bin's rows times a block of columns. */
struct ffn_tile {
	uint32_t bin;
	uint32_t row0, rows;
	uint32_t c0, c1;
	const struct ffn_weights *ffn; /* the weights this tile reads */
};

/*
 * Can @homes ([L->n_experts]) serve @L's FFN experts with @cfg? Each
 * expert needs 1..PLACEMENT_MAX_COPIES copies, each with weights of the
 * expert's own shape (d_ff, w1, w2, w3 when @cfg's activation is gated,
 * the biases the expert has). A node beyond the pool's is not checked here:
 * it computes on node 0. 0 or -EINVAL with the expert and copy in @d.
 */
int engine_homes_check(const struct moe_layer *L, const struct router_config *cfg,
		       const struct expert_home *homes, struct diag *d);

/*
 * @in's @n tiles (bin-major, as the engine builds them) into @out grouped by
 * node, for pool_run_nodes(): tile i of an expert goes to copy
 * i mod n_copies and takes that copy's weights; tiles of other bins (the
 * shared expert, bin >= @n_experts) go round-robin over the nodes and keep
 * their weights. A node >= @n_nodes counts as node 0. node_end[k] receives
 * the end of node k's tiles in @out ([n_nodes]). Within a node, tiles keep
 * their order in @in. Only who computes a tile changes, never what it
 * computes or where it writes.
 */
void engine_tiles_by_node(const struct ffn_tile *in, size_t n, const struct expert_home *homes,
			  uint32_t n_experts, uint32_t n_nodes, struct ffn_tile *out,
			  uint32_t *node_end);
