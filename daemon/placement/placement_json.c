/* SPDX-License-Identifier: MIT */
/*
 * placement_json: a placement as JSON (see placement_to_json() in
 * placement.h), with kernel node ids so that what `moectl experts` prints
 * can be compared with numactl and /sys directly.
 *
 * Each object is packed with its arrays empty and filled through borrowed
 * references, so one json_decref() of the object undoes every failure. The
 * jansson *_new setters take the value's reference even when they fail (and
 * fail on NULL), which lets a failed child be passed straight in.
 */
#include <jansson.h>

#include "placement/placement.h"

static json_t *expert_json(const struct placement *p, const struct topology *t, uint32_t l,
			   uint32_t e, const uint64_t *const *bytes, const double *const *load)
{
	const struct expert_place *ep = &p->layers[l].experts[e];
	json_t *o = json_pack("{s:I, s:[]}", "expert", (json_int_t)e, "nodes");
	json_t *nodes = json_object_get(o, "nodes");

	if (!o)
		return NULL;
	for (uint32_t c = 0; c < ep->n_copies; c++)
		if (ep->node[c] >= t->n_nodes ||
		    json_array_append_new(nodes, json_integer(t->nodes[ep->node[c]].id)) < 0)
			goto fail;
	if (bytes && bytes[l] &&
	    json_object_set_new(o, "bytes", json_integer((json_int_t)bytes[l][e])) < 0)
		goto fail;
	if (load && load[l] && json_object_set_new(o, "load", json_real(load[l][e])) < 0)
		goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

static json_t *layer_json(const struct placement *p, const struct topology *t, uint32_t l,
			  const uint64_t *const *bytes, const double *const *load)
{
	json_t *o = json_pack("{s:I, s:[]}", "layer", (json_int_t)l, "experts");
	json_t *experts = json_object_get(o, "experts");

	if (!o)
		return NULL;
	for (uint32_t e = 0; e < p->layers[l].n_experts; e++) {
		if (json_array_append_new(experts, expert_json(p, t, l, e, bytes, load)) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

/* One node's line: its kernel id, the expert copies and (with bytes) their size. */
static json_t *node_json(const struct topology *t, uint32_t n, uint64_t n_experts,
			 const uint64_t *n_bytes)
{
	json_t *o = json_pack("{s:I, s:I}", "node", (json_int_t)t->nodes[n].id, "experts",
			      (json_int_t)n_experts);

	if (o && n_bytes &&
	    json_object_set_new(o, "bytes", json_integer((json_int_t)*n_bytes)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *nodes_json(const struct placement *p, const struct topology *t,
			  const uint64_t *const *bytes)
{
	uint64_t n_experts[TOPOLOGY_MAX_NODES] = { 0 }, n_bytes[TOPOLOGY_MAX_NODES] = { 0 };
	json_t *arr = json_array();

	for (uint32_t l = 0; l < p->n_layers; l++) {
		for (uint32_t e = 0; e < p->layers[l].n_experts; e++) {
			const struct expert_place *ep = &p->layers[l].experts[e];

			for (uint32_t c = 0; c < ep->n_copies; c++) {
				if (ep->node[c] >= t->n_nodes)
					continue; /* expert_json() refuses the placement */
				n_experts[ep->node[c]]++;
				n_bytes[ep->node[c]] += bytes && bytes[l] ? bytes[l][e] : 0;
			}
		}
	}
	for (uint32_t n = 0; arr && n < t->n_nodes; n++) {
		if (json_array_append_new(
			arr, node_json(t, n, n_experts[n], bytes ? &n_bytes[n] : NULL)) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	return arr;
}

json_t *placement_to_json(const struct placement *p, const struct topology *t,
			  const uint64_t *const *bytes, const double *const *load)
{
	json_t *root, *layers;

	if (!p || !t || p->n_nodes != t->n_nodes)
		return NULL;
	/* "o" takes nodes_json()'s reference, even when packing fails */
	root = json_pack("{s:I, s:o, s:[]}", "epoch", (json_int_t)p->epoch, "nodes",
			 nodes_json(p, t, bytes), "layers");
	layers = json_object_get(root, "layers");
	if (!root)
		return NULL;
	for (uint32_t l = 0; l < p->n_layers; l++) {
		if (json_array_append_new(layers, layer_json(p, t, l, bytes, load)) < 0) {
			json_decref(root);
			return NULL;
		}
	}
	return root;
}
