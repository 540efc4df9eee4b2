/* SPDX-License-Identifier: MIT */
/*
 * pool: where the engine's parallel work runs. An interface (ops table) so
 * that the NUMA-aware pools (one per node, threads pinned to the node's CPUs)
 * can replace the plain thread pool without the engine changing.
 *
 * The one operation is a parallel-for: run fn(ctx, task, worker) for every
 * task in [0, n_tasks) on the pool's workers, the calling thread included,
 * and return when all have finished. Tasks are claimed dynamically, so
 * uneven tasks balance; @worker is in [0, n_workers) and unique among the
 * tasks running at one time (for per-worker scratch).
 *
 * Thread-safety: one run() at a time per pool (the engine serialises).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef void (*pool_task_fn)(void *ctx, uint32_t task, uint32_t worker);

struct pool;

struct pool_ops {
	uint32_t (*n_workers)(const struct pool *p);
	void (*run)(struct pool *p, uint32_t n_tasks, pool_task_fn fn, void *ctx);
	void (*free)(struct pool *p);
};

struct pool {
	const struct pool_ops *ops;
};

static inline uint32_t pool_n_workers(const struct pool *p)
{
	return p->ops->n_workers(p);
}

static inline void pool_run(struct pool *p, uint32_t n_tasks, pool_task_fn fn, void *ctx)
{
	p->ops->run(p, n_tasks, fn, ctx);
}

/* NULL-safe; returns NULL. */
static inline struct pool *pool_free(struct pool *p)
{
	if (p)
		p->ops->free(p);
	return NULL;
}

/*
 * A pool of @n_workers threads counting the caller (so n_workers - 1 are
 * started). 0 means one per CPU the process may run on. -errno on failure.
 */
int pool_threads_new(uint32_t n_workers, struct pool **ret_pool);
