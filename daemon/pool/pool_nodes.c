/* SPDX-License-Identifier: MIT */
/*
 * pool_nodes: the NUMA pool's shape: how many threads each node of a
 * topology gets (see pool_nodes_new() in pool.h). The threads, jobs and
 * claiming are pool.c's, shared with the plain pool.
 *
 * Worked example, 2 nodes of 3 and 1 CPUs, n_workers 6: floor shares
 * 6*3/4 = 4 and 6*1/4 = 1 (at least 1), sum 5 < 6, so the node with the
 * fewest workers per CPU (1/1 against 4/3: node 1) gets one more: 4 + 2.
 * The caller takes the slot of the node with the most (node 0): threads
 * 3 + 2, pool_n_workers() 6. With 2 nodes of 1 CPU and n_workers 0: 1 + 1
 * workers, and no node can give one up, so 2 threads and 3 workers.
 */
#include <errno.h>
#include <sched.h>
#include <stdint.h>

#include "numa/topology.h"
#include "pool.h"
#include "pool_internal.h"

/* Is node @a's workers-per-CPU ratio c[a]/cpus[a] above node @b's? */
static bool ratio_above(const uint32_t *c, const uint32_t *cpus, uint32_t a, uint32_t b)
{
	return (uint64_t)c[a] * cpus[b] > (uint64_t)c[b] * cpus[a];
}

/*
 * @n workers over @n_nodes nodes in proportion to @cpus, at least one each:
 * floor shares first, then one at a time to the node furthest below its
 * share (or from the one furthest above, never below 1); ties go to the
 * lowest index, so the outcome depends on the inputs only.
 */
static void workers_spread(uint32_t n_nodes, const uint32_t *cpus, uint32_t n, uint32_t *c)
{
	uint64_t total = 0, sum = 0;

	for (uint32_t i = 0; i < n_nodes; i++)
		total += cpus[i];
	for (uint32_t i = 0; i < n_nodes; i++) {
		c[i] = (uint32_t)((uint64_t)n * cpus[i] / total);
		if (c[i] == 0)
			c[i] = 1;
		sum += c[i];
	}
	while (sum < n) {
		uint32_t best = 0;

		for (uint32_t i = 1; i < n_nodes; i++)
			if (ratio_above(c, cpus, best, i))
				best = i;
		c[best]++;
		sum++;
	}
	while (sum > n) {
		uint32_t best = UINT32_MAX;

		for (uint32_t i = 0; i < n_nodes; i++)
			if (c[i] > 1 && (best == UINT32_MAX || ratio_above(c, cpus, i, best)))
				best = i;
		if (best == UINT32_MAX)
			break; /* every node at its one worker: n < n_nodes */
		c[best]--;
		sum--;
	}
}

/*
 * The caller of run() is a worker: the node with the most workers starts
 * one thread fewer. In a multi-node pool a node is never left without a
 * thread: its tasks would then run only when the caller happens to be on
 * it (or by theft), so the pool keeps that thread and has one worker more.
 */
static void caller_slot_take(uint32_t n_nodes, uint32_t *c)
{
	uint32_t most = 0;

	for (uint32_t i = 1; i < n_nodes; i++)
		if (c[i] > c[most])
			most = i;
	if (c[most] >= 2 || n_nodes == 1)
		c[most]--;
}

int pool_nodes_new(const struct topology *t, uint32_t n_workers, bool steal,
		   struct pool **ret_pool)
{
	struct pool_layout l = { .topo = t, .steal = steal };
	uint32_t cpus[TOPOLOGY_MAX_NODES];
	uint64_t total = 0;

	if (!t || t->n_nodes < 1 || t->n_nodes > TOPOLOGY_MAX_NODES ||
	    n_workers > POOL_MAX_WORKERS)
		return -EINVAL;
	for (uint32_t i = 0; i < t->n_nodes; i++) {
		/* counted here rather than trusting n_cpus: the set is what pins */
		int n = CPU_COUNT(&t->nodes[i].cpus);

		if (n < 1)
			return -EINVAL;
		cpus[i] = (uint32_t)n;
		total += cpus[i];
	}
	if (n_workers == 0) {
		if (total > POOL_MAX_WORKERS)
			return -EINVAL;
		for (uint32_t i = 0; i < t->n_nodes; i++)
			l.node_threads[i] = cpus[i];
	} else {
		workers_spread(t->n_nodes, cpus, n_workers, l.node_threads);
	}
	caller_slot_take(t->n_nodes, l.node_threads);
	return pool_layout_start(&l, ret_pool);
}
