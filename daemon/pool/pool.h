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

#include <stddef.h>
#include <stdint.h>

typedef void (*pool_task_fn)(void *ctx, uint32_t task, uint32_t worker);

struct pool;

struct pool_ops {
	uint32_t (*n_workers)(const struct pool *p);
	uint32_t (*n_nodes)(const struct pool *p);
	void (*run)(struct pool *p, uint32_t n_tasks, pool_task_fn fn, void *ctx);
	void (*run_nodes)(struct pool *p, uint32_t n_nodes, const uint32_t *node_end,
			  pool_task_fn fn, void *ctx);
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
 * run on. -errno on failure.
 */
int pool_threads_new(uint32_t n_workers, struct pool **ret_pool);
