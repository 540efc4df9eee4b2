/* SPDX-License-Identifier: MIT */
/* status_store: the expert store as JSON for STATUS; see status_store.h. */
#include "control/status_store.h"

#include <stdlib.h>

#include "engine/engine.h"
#include "sched/layer_stats.h"

static void expert_bytes_free(uint64_t **bytes, uint32_t n_layers)
{
	for (uint32_t l = 0; bytes && l < n_layers; l++)
		free(bytes[l]);
	free(bytes);
}

/*
 * The bytes of each expert's weights here, [n_layers][n_experts] (NULL rows:
 * no MoE block; 0: an expert another host holds).
 */
static uint64_t **expert_bytes_new(const struct moe_model *m, const struct placement *p)
{
	uint64_t **bytes = calloc(p->n_layers ?: 1, sizeof(*bytes));

	for (uint32_t l = 0; bytes && l < p->n_layers; l++) {
		const struct moe_layer *L = moe_model_layer(m, l);

		if (!L || !p->layers[l].n_experts)
			continue;
		bytes[l] = calloc(p->layers[l].n_experts, sizeof(*bytes[l]));
		if (!bytes[l])
			return expert_bytes_free(bytes, l), NULL;
		for (uint32_t e = 0; e < p->layers[l].n_experts && e < L->n_experts; e++) {
			const struct ffn_weights *f = &L->experts[e].ffn;
			uint64_t ff = f->d_ff, d = L->d_model;

			if (moe_expert_held_elsewhere(&L->experts[e]))
				continue;
			bytes[l][e] = weight_dtype_size(f->dtype) * ff * d * (f->w3 ? 3 : 2) +
				      sizeof(float) * ((f->b1 ? ff : 0) + (f->b2 ? d : 0));
		}
	}
	return bytes;
}

/* Each node's share of the tokens @layers counted per expert, under placement @p. */
static void node_tokens(const struct placement *p, const struct layer_stats *layers,
			double *ret)
{
	for (uint32_t l = 0; layers && l < p->n_layers; l++)
		if (layers[l].tokens_per_expert)
			placement_add_node_load(p, l, layers[l].tokens_per_expert,
						layers[l].n_experts, ret);
}

/* The pool's figures of node @n into @o: workers, busy, tasks, expert tokens and their rate. */
static void node_work_json(json_t *o, const struct engine *engine, uint32_t n, double tokens,
			   double uptime_s)
{
	struct pool_node_stats ps;
	double busy;

	engine_node_stats(engine, n, &ps);
	busy = ps.workers && uptime_s > 0 ? (double)ps.busy_ns / 1e9 / uptime_s / ps.workers : 0;
	json_object_set_new(o, "workers", json_integer(ps.workers));
	json_object_set_new(o, "busy", json_real(busy));
	json_object_set_new(o, "tasks", json_integer((json_int_t)ps.tasks));
	json_object_set_new(o, "expert_tokens", json_integer((json_int_t)tokens));
	json_object_set_new(o, "tokens_per_s", json_real(uptime_s > 0 ? tokens / uptime_s : 0));
}

static json_t *nodes_json(struct expert_store *s, const struct placement *p,
			  const struct engine *engine, const struct layer_stats *layers,
			  double uptime_s)
{
	const struct expert_store_info *info = expert_store_info(s);
	const struct topology *topo = expert_store_topology(s);
	double tokens[TOPOLOGY_MAX_NODES] = { 0 };
	json_t *nodes = json_array();

	node_tokens(p, layers, tokens);
	for (uint32_t n = 0; nodes && n < info->n_nodes && n < topo->n_nodes; n++) {
		uint64_t used, budget;
		json_t *o;

		expert_store_replica_space(s, n, &used, &budget);
		o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "node",
			      (json_int_t)topo->nodes[n].id, "cpus", (json_int_t)topo->nodes[n].n_cpus,
			      "loaded_experts", (json_int_t)info->node_experts[n], "bytes",
			      (json_int_t)info->node_bytes[n], "replica_budget", (json_int_t)budget,
			      "replica_used", (json_int_t)used, "mem_free",
			      (json_int_t)topo->nodes[n].mem_free);
		if (o && engine)
			node_work_json(o, engine, n, tokens[n], uptime_s);
		json_array_append_new(nodes, o);
	}
	return nodes;
}

/* The epochs of the latest changes that failed (each published the map unchanged). */
static json_t *failed_epochs_json(struct expert_store *s)
{
	uint64_t epochs[16];
	size_t n = expert_store_failed_epochs(s, epochs, 16);
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < n; i++)
		json_array_append_new(arr, json_integer((json_int_t)epochs[i]));
	return arr;
}

json_t *status_store_json(struct expert_store *s, const struct engine *engine,
			  const struct layer_stats *layers, double uptime_s)
{
	const struct expert_store_info *info = expert_store_info(s);
	const struct topology *topo = expert_store_topology(s);
	struct expert_map *map = expert_store_map_get(s);
	const struct placement *p = expert_map_placement(map);
	uint64_t **bytes = expert_bytes_new(expert_store_model(s), p);
	json_t *o = NULL;

	if (bytes)
		o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:f, s:b, s:s, s:b, s:I, s:o*, s:o*, "
			      "s:o*}",
			      "source", info->source == STORE_ATTACHED ? "attached" : "loaded",
			      "reload_reason", info->reload_reason, "identity", info->identity,
			      "weight_bytes", (json_int_t)info->weight_bytes, "remote_experts",
			      (json_int_t)info->remote_experts, "read_bytes",
			      (json_int_t)info->read_bytes, "ready_s", info->seconds, "huge_pages",
			      info->huge_pages, "topology", topo->source, "simulated",
			      topo->simulated, "epoch", (json_int_t)expert_map_epoch(map),
			      "failed_epochs", failed_epochs_json(s), "nodes",
			      nodes_json(s, p, engine, layers, uptime_s), "map",
			      placement_to_json(p, topo, (const uint64_t *const *)bytes, NULL));
	expert_bytes_free(bytes, p->n_layers);
	expert_map_put(map);
	return o;
}
