/* SPDX-License-Identifier: MIT */
/*
 * pool_internal: the seam between the pool's machinery (pool.c: jobs,
 * threads, claiming, waiting) and the code that decides how many threads run
 * where (pool_threads_new() in pool.c for the plain pool, pool_nodes.c for
 * the NUMA pool). Not for other modules.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "numa/topology.h"
#include "pool.h"

struct pool_layout {
	/* NULL: one node, threads not pinned (the plain pool). Read only
	 * while the pool starts. */
	const struct topology *topo;
	bool steal; /* run_nodes(): idle threads take other nodes' tasks */
	/* threads to start per node, the caller not counted; the sum is
	 * below POOL_MAX_WORKERS, and with several nodes none is 0 */
	uint32_t node_threads[TOPOLOGY_MAX_NODES];
};

/*
 * Start a pool of @l's threads (indices 1.. in node order; the caller of
 * run() is worker 0). 0, or -ENOMEM / pthread_create()'s -errno with
 * nothing left running.
 */
int pool_layout_start(const struct pool_layout *l, struct pool **ret_pool);
