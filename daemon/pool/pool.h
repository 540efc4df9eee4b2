/* SPDX-License-Identifier: MIT */
/*
 * pool: where the engine's parallel work runs. An interface (ops table) so
 * that the NUMA-aware pools (one per node, threads pinned to the node's CPUs)
 * can replace the plain thread pool without the engine changing.
 *
 * The one operation is a parallel-for: run fn(ctx, task, worker) for every
 * task in [0, n_tasks) on the pool's workers, the calling thread included,
 * and return when all have finished. Tasks are claimed dynamically, so
 * uneven tasks balance. @worker is in [0, n_workers) and unique among the
 * threads working on one job at one time (for per-job, per-worker scratch);
 * the caller always works as worker 0 on its own job.
 *
 * Thread-safety: run() may be called from several threads at once (moed's
 * executor runs several engine runs in flight). Each call is a job of its
 * own; the pool's threads help the oldest job that still has unclaimed
 * tasks, and a call returns as soon as its own job's tasks are done,
 * whatever the other jobs are doing.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most workers a pool has, the caller of run() included. */
#define POOL_MAX_WORKERS 1024

typedef void (*pool_task_fn)(void *ctx, uint32_t task, uint32_t worker);

struct pool;

/* What one node's pool threads did since the pool started (the callers of run() not counted). */
struct pool_node_stats {
	uint32_t workers;   /* threads pinned to the node (run()'s caller works too, uncounted) */
	uint64_t busy_ns;   /* thread time spent claiming and running tasks */
	uint64_t tasks;     /* tasks its threads ran */
};

struct pool_ops {
	uint32_t (*n_workers)(const struct pool *p);
	uint32_t (*n_nodes)(const struct pool *p);
	void (*run)(struct pool *p, uint32_t n_tasks, pool_task_fn fn, void *ctx);
	void (*run_nodes)(struct pool *p, uint32_t n_nodes, const uint32_t *node_end,
			  pool_task_fn fn, void *ctx);
	void (*node_stats)(const struct pool *p, uint32_t node, struct pool_node_stats *ret);
	void (*free)(struct pool *p);
};

struct pool {
	const struct pool_ops *ops;
};

static inline uint32_t pool_n_workers(const struct pool *p)
{
	return p->ops->n_workers(p);
}

/* Nodes whose workers the pool has (1 for a pool that does not know nodes). */
static inline uint32_t pool_n_nodes(const struct pool *p)
{
	return p->ops->n_nodes(p);
}

static inline void pool_run(struct pool *p, uint32_t n_tasks, pool_task_fn fn, void *ctx)
{
	p->ops->run(p, n_tasks, fn, ctx);
}

/*
 * A parallel-for whose tasks belong to nodes: the tasks of node i are
 * [node_end[i - 1], node_end[i]) (node_end[-1] taken as 0), @n_nodes of
 * them, and run on the workers pinned to node i (indices into the
 * topology's nodes[]). A node's workers take tasks of other nodes only when
 * the pool allows stealing, after their own are claimed. @n_nodes may be
 * below pool_n_nodes() (the rest have no tasks); a node index the pool does
 * not have is run by node 0's workers. For a pool without nodes, the same
 * as run() over node_end[n_nodes - 1] tasks.
 */
static inline void pool_run_nodes(struct pool *p, uint32_t n_nodes, const uint32_t *node_end,
				  pool_task_fn fn, void *ctx)
{
	p->ops->run_nodes(p, n_nodes, node_end, fn, ctx);
}

/* Node @node's counters (zeroes for a node the pool does not have). Any thread. */
static inline void pool_node_stats(const struct pool *p, uint32_t node, struct pool_node_stats *ret)
{
	p->ops->node_stats(p, node, ret);
}

/* NULL-safe; returns NULL. Every run() must have returned. */
static inline struct pool *pool_free(struct pool *p)
{
	if (p)
		p->ops->free(p);
	return NULL;
}

/*
 * A pool of @n_workers workers counting the caller of run() (so
 * n_workers - 1 threads are started). 0 means one per CPU the process may
 * run on. One node: run_nodes() is run(). -errno on failure.
 */
int pool_threads_new(uint32_t n_workers, struct pool **ret_pool);

struct topology;

/*
 * A NUMA-aware pool: one group of threads per node of @t, each thread
 * pinned (its affinity set before it starts) to its node's CPU set.
 *
 * Worker counts: @n_workers 0 means one per CPU of each node (CPUs that
 * simulated nodes share count once per node); otherwise n_workers are
 * spread over the nodes in proportion to their CPU counts, at least one
 * each (so there may be more than asked when n_workers < n_nodes). The
 * caller of run()/run_nodes() counts as a worker, as in the plain pool: the
 * node with the most workers (the lowest index on a tie) starts one thread
 * fewer, unless that would leave a node of a multi-node pool without a
 * thread; every node keeps a pinned thread of its own, so no node's tasks
 * depend on where the caller happens to run. pool_n_workers() tells the
 * outcome (threads + 1). With one node this is exactly
 * pool_threads_new(n_workers) with pinned threads.
 *
 * run() spreads over every worker of every node, as the plain pool does.
 * run_nodes(): a node's threads claim their node's tasks; with @steal, an
 * idle thread then claims other nodes' unclaimed tasks, without it never.
 * The caller claims the tasks of the node whose CPU set holds the CPU it
 * runs on when it posts the job (sched_getcpu(); the first such node when
 * simulated nodes share the CPU; none when no node holds it; always node 0
 * in a one-node pool), then, with @steal, the others'. Worker indices are
 * unique across all nodes (the caller is 0, the threads 1..n-1).
 *
 * @t is read only here. -EINVAL (no nodes, more than TOPOLOGY_MAX_NODES, a
 * node with no CPU, more than POOL_MAX_WORKERS workers), -ENOMEM, or the
 * -errno of pthread_create() (EINVAL: a CPU set this process may not use).
 */
int pool_nodes_new(const struct topology *t, uint32_t n_workers, bool steal,
		   struct pool **ret_pool);
