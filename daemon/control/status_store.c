/* SPDX-License-Identifier: MIT */
/* status_store: the expert store as JSON for STATUS; see status_store.h. */
#include "control/status_store.h"

/* Per layer, per expert: the kernel ids of the nodes holding a copy, primary first. */
static json_t *placement_json(const struct placement *p, const struct topology *topo)
{
	json_t *layers = json_array();

	for (uint32_t l = 0; layers && l < p->n_layers; l++) {
		const struct layer_place *lp = &p->layers[l];
		json_t *experts = json_array();

		for (uint32_t e = 0; experts && e < lp->n_experts; e++) {
			json_t *nodes = json_array();

			for (uint32_t c = 0; nodes && c < lp->experts[e].n_copies; c++)
				json_array_append_new(
					nodes, json_integer(topo->nodes[lp->experts[e].node[c]].id));
			json_array_append_new(experts, nodes);
		}
		json_array_append_new(layers, lp->n_experts ? experts : json_null());
		if (!lp->n_experts)
			json_decref(experts);
	}
	return layers;
}

static json_t *nodes_json(const struct expert_store_info *info, const struct topology *topo)
{
	json_t *nodes = json_array();

	for (uint32_t n = 0; nodes && n < info->n_nodes && n < topo->n_nodes; n++)
		json_array_append_new(nodes,
				      json_pack("{s:I, s:I, s:I, s:I, s:I}", "node",
						(json_int_t)topo->nodes[n].id, "cpus",
						(json_int_t)topo->nodes[n].n_cpus, "experts",
						(json_int_t)info->node_experts[n], "bytes",
						(json_int_t)info->node_bytes[n], "mem_free",
						(json_int_t)topo->nodes[n].mem_free));
	return nodes;
}

json_t *status_store_json(struct expert_store *s)
{
	const struct expert_store_info *info = expert_store_info(s);
	const struct topology *topo = expert_store_topology(s);
	struct expert_map *map = expert_store_map_get(s);
	json_t *o;

	o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:b, s:s, s:b, s:o*, s:o*}",
			 "source", info->source == STORE_ATTACHED ? "attached" : "loaded",
			 "reload_reason", info->reload_reason,
			 "identity", info->identity, "weight_bytes", (json_int_t)info->weight_bytes,
			 "read_bytes", (json_int_t)info->read_bytes, "ready_s", info->seconds,
			 "huge_pages", info->huge_pages, "topology", topo->source, "simulated",
			 topo->simulated, "nodes", nodes_json(info, topo), "experts",
			 placement_json(expert_map_placement(map), topo));
	expert_map_put(map);
	return o;
}
