/* SPDX-License-Identifier: MIT */
/*
 * status_store: the expert store's part of `moectl status`: where the
 * weights came from (loaded or re-attached, and why an old store was not
 * used), the NUMA nodes with their experts and bytes, and the placement map.
 */
#pragma once

#include <jansson.h>

#include "store/expert_store.h"

/*
 * {"source", "identity", "weight_bytes", ..., "epoch", "failed_epochs" (of
 * the latest changes that failed when applied), "nodes": [per node:
 * id, cpus, loaded_experts, bytes, replica_budget, replica_used, mem_free,
 * and from @engine's pool (NULL: left out) workers, busy (the fraction of
 * the workers' time since start spent on tasks), tasks, expert_tokens (the
 * tokens @layers counted per expert, each expert's split evenly over its
 * copies in the current map) and tokens_per_s (those over @uptime_s)],
 * "map": placement_to_json() of the current map with each expert's bytes};
 * NULL on ENOMEM.
 */
struct engine;
struct layer_stats;

json_t *status_store_json(struct expert_store *s, const struct engine *engine,
			  const struct layer_stats *layers, double uptime_s);
