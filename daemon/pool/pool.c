/* SPDX-License-Identifier: MIT */
/*
 * pool: the plain thread pool. A job is published under a mutex with a new
 * generation number; workers wake on the condition variable, claim tasks from
 * an atomic counter until it passes n_tasks, then report done. The caller
 * claims tasks too, then waits for the workers. Between jobs the workers
 * sleep on the condition variable, so an idle pool costs nothing.
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

struct thread_pool {
	struct pool base;
	uint32_t n_workers;
	pthread_t *threads;
	uint32_t n_started;

	pthread_mutex_t lock;
	pthread_cond_t wake; /* workers wait here for a new generation */
	pthread_cond_t idle; /* the caller waits here for the workers to finish */
	uint64_t generation;
	uint32_t n_busy; /* workers still inside the current generation */
	bool stopping;

	/* the current job; written under lock before generation moves */
	pool_task_fn fn;
	void *ctx;
	uint32_t n_tasks;
	atomic_uint next_task;
};

struct worker_arg {
	struct thread_pool *pool;
	uint32_t index;
};

static void claim_tasks(struct thread_pool *p, uint32_t worker)
{
	for (;;) {
		uint32_t t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);

		if (t >= p->n_tasks)
			return;
		p->fn(p->ctx, t, worker);
	}
}

static void *worker_main(void *arg)
{
	struct worker_arg *wa = arg;
	struct thread_pool *p = wa->pool;
	uint32_t index = wa->index;
	uint64_t seen = 0;

	free(wa);
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->stopping && p->generation == seen)
			pthread_cond_wait(&p->wake, &p->lock);
		if (p->stopping)
			break;
		seen = p->generation;
		pthread_mutex_unlock(&p->lock);
		claim_tasks(p, index);
		pthread_mutex_lock(&p->lock);
		if (--p->n_busy == 0)
			pthread_cond_signal(&p->idle);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static uint32_t thread_pool_n_workers(const struct pool *base)
{
	return ((const struct thread_pool *)base)->n_workers;
}

static void thread_pool_run(struct pool *base, uint32_t n_tasks, pool_task_fn fn, void *ctx)
{
	struct thread_pool *p = (struct thread_pool *)base;

	if (n_tasks == 0)
		return;
	if (p->n_started == 0 || n_tasks == 1) {
		/* nothing to share: skip the wake-ups */
		for (uint32_t t = 0; t < n_tasks; t++)
			fn(ctx, t, 0);
		return;
	}
	pthread_mutex_lock(&p->lock);
	p->fn = fn;
	p->ctx = ctx;
	p->n_tasks = n_tasks;
	atomic_store_explicit(&p->next_task, 0, memory_order_relaxed);
	p->n_busy = p->n_started;
	p->generation++;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);

	claim_tasks(p, 0);

	pthread_mutex_lock(&p->lock);
	while (p->n_busy > 0)
		pthread_cond_wait(&p->idle, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

static void thread_pool_free(struct pool *base)
{
	struct thread_pool *p = (struct thread_pool *)base;

	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	for (uint32_t i = 0; i < p->n_started; i++)
		pthread_join(p->threads[i], NULL);
	pthread_cond_destroy(&p->idle);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p->threads);
	free(p);
}

static const struct pool_ops thread_pool_ops = {
	.n_workers = thread_pool_n_workers,
	.run = thread_pool_run,
	.free = thread_pool_free,
};

static uint32_t allowed_cpus(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) < 0 || CPU_COUNT(&set) < 1)
		return 1;
	return (uint32_t)CPU_COUNT(&set);
}

int pool_threads_new(uint32_t n_workers, struct pool **ret_pool)
{
	struct thread_pool *p;
	int r;

	if (n_workers == 0)
		n_workers = allowed_cpus();
	if (n_workers > 1024)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->base.ops = &thread_pool_ops;
	p->n_workers = n_workers;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->idle, NULL);
	p->threads = calloc(n_workers, sizeof(*p->threads));
	if (!p->threads) {
		r = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 1; i < n_workers; i++) {
		struct worker_arg *wa = malloc(sizeof(*wa));

		if (!wa) {
			r = -ENOMEM;
			goto fail;
		}
		*wa = (struct worker_arg){ p, i };
		r = -pthread_create(&p->threads[p->n_started], NULL, worker_main, wa);
		if (r < 0) {
			free(wa);
			goto fail;
		}
		p->n_started++;
	}
	*ret_pool = &p->base;
	return 0;
fail:
	thread_pool_free(&p->base);
	return r;
}
