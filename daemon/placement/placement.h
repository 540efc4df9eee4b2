/* SPDX-License-Identifier: MIT */
/*
 * placement: which NUMA node(s) hold each expert of each MoE layer.
 *
 * A placement is a versioned map (layer, expert) -> a primary node and
 * optional replica nodes, made by one of three policies over a topology:
 *
 * - interleave: expert e of every layer on node e mod n_nodes (as
 *   numactl --interleave spreads pages, but by whole experts);
 * - balanced: experts in descending order of weight (load x bytes; load
 *   defaults to 1 when nothing was measured), each onto the node with the
 *   least weight so far (then the fewest bytes, then the lowest index), never
 *   past a node's memory when that is known. Deterministic for given inputs.
 *   Weight is balanced per layer (layers run one at a time); bytes, and the
 *   memory limit, count every layer placed so far.
 * - explicit: from the `expert_nodes` setting, `EXPERTS@NODE[;EXPERTS@NODE…]`
 *   with EXPERTS a list such as 0-3,6 and NODE a node id of the topology,
 *   the same for every layer; a layer-specific entry `L:EXPERTS@NODE`
 *   (L a layer index) overrides it for that layer, expert by expert. Experts
 *   named nowhere are interleaved. Entries for every layer are checked
 *   against the largest layer (a smaller layer ignores indices it lacks). An expert named twice, a node the topology lacks or an
 *   expert index beyond the model's fails with a message naming the entry.
 *
 * Node numbers inside a placement are indices into topology.nodes[], not
 * kernel node ids (the two agree on most machines; they differ where a
 * cpuset hides node 0).
 *
 * Thread-safety: a placement is immutable once made; a changed map is a new
 * placement with a higher epoch.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "numa/topology.h"
#include "util/diag.h"

/* The most copies of one expert (primary + replicas). */
#define PLACEMENT_MAX_COPIES 8

enum placement_policy {
	PLACEMENT_BALANCED,
	PLACEMENT_INTERLEAVE,
	PLACEMENT_EXPLICIT,
};

struct expert_place {
	uint8_t n_copies;                       /* >= 1 */
	uint8_t node[PLACEMENT_MAX_COPIES];     /* node[0] is the primary */
};

struct layer_place {
	uint32_t n_experts;          /* 0 for a layer without an MoE block */
	struct expert_place *experts; /* [n_experts] */
};

struct placement {
	uint64_t epoch;
	uint32_t n_nodes;
	uint32_t n_layers;
	struct layer_place *layers; /* [n_layers] */
};

/* What the policies need to know of the model. */
struct placement_input {
	const struct topology *topo;
	enum placement_policy policy;
	const char *expert_nodes;      /* explicit only */
	uint32_t n_layers;
	const uint32_t *n_experts;     /* [n_layers], 0: no MoE block */
	const uint64_t *const *bytes;  /* [n_layers][n_experts[l]] weight bytes per expert;
					* balanced only (NULL allowed for the others) */
	const double *const *load;     /* NULL, or [n_layers][n_experts[l]] measured load */
};

int placement_policy_from_name(const char *name, enum placement_policy *ret);
const char *placement_policy_name(enum placement_policy p);

/*
 * Make a placement (epoch 1, no replicas). 0, or with @d filled: -EINVAL
 * (bad input or expert_nodes), -ENOSPC (balanced: an expert fits on no node's
 * memory) or -ENOMEM. The caller frees *ret with placement_free().
 */
int placement_make(const struct placement_input *in, struct placement **ret, struct diag *d);

/* A deep copy with epoch + 1, to be changed and published as the next map. 0 or -ENOMEM. */
int placement_clone(const struct placement *p, struct placement **ret);

/*
 * Add a replica of (layer, expert) on @node (an index); -EEXIST if the
 * expert already has a copy there, -E2BIG at PLACEMENT_MAX_COPIES,
 * -EINVAL for an index out of range.
 */
int placement_add_replica(struct placement *p, uint32_t layer, uint32_t expert, uint32_t node);

/*
 * Make @node the primary copy of (layer, expert): a replica there moves to
 * the front, otherwise @node takes the old primary's place; the old primary
 * goes either way. -EEXIST when @node is the primary already, -EINVAL for
 * an index out of range.
 */
int placement_move(struct placement *p, uint32_t layer, uint32_t expert, uint32_t node);

/*
 * Remove the copy of (layer, expert) on @node; the next copy in order
 * becomes the primary when it was. -ENOENT without a copy there, -EPERM for
 * the last copy, -EINVAL for an index out of range.
 */
int placement_drop_copy(struct placement *p, uint32_t layer, uint32_t expert, uint32_t node);

/*
 * Add each node's share of @layer's tokens to @node_load[node]: @tokens[e]
 * (e < @n_experts, which may be below the layer's) is what expert e
 * received, split evenly over its copies, as its tiles are.
 */
void placement_add_node_load(const struct placement *p, uint32_t layer, const uint64_t *tokens,
			     uint32_t n_experts, double *node_load);

/* NULL-safe; returns NULL. */
struct placement *placement_free(struct placement *p);

/*
 * A JSON description of @p for `moectl experts` and the status object:
 *
 *   { "epoch": 1,
 *     "nodes": [ { "node": 0, "experts": 12, "bytes": 1234 }, ... ],
 *     "layers": [ { "layer": 0,
 *                   "experts": [ { "expert": 0, "nodes": [0, 1],
 *                                  "bytes": 4096, "load": 1.5 }, ... ] }, ... ] }
 *
 * Node numbers are @t's kernel ids (primary first). @bytes and @load are as
 * in struct placement_input and optional: without them those keys are left
 * out (per node "bytes" counts every copy). @t must be the topology @p was
 * made over. A new reference, or NULL when out of memory or when @p names a
 * node @t lacks.
 */
struct json_t;
struct json_t *placement_to_json(const struct placement *p, const struct topology *t,
				 const uint64_t *const *bytes, const double *const *load);
