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
 * {"source", "identity", "weight_bytes", ..., "epoch", "nodes": [per node:
 * id, cpus, loaded_experts, bytes, replica_budget, replica_used, mem_free],
 * "map": placement_to_json() of the current map with each expert's bytes};
 * NULL on ENOMEM.
 */
json_t *status_store_json(struct expert_store *s);
