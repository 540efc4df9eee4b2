/* SPDX-License-Identifier: MIT */
/*
 * pool: the plain thread pool.
 *
 * A job is published by storing its fields, then bumping `generation` with
 * a release store (under the lock, with a broadcast for sleepers). Workers
 * claim tasks from an atomic counter until it passes n_tasks, then decrement
 * `n_busy`; the caller claims tasks too, then waits for n_busy to reach 0.
 *
 * Both waits spin for a short while before they sleep on a condition
 * variable: one forward pass publishes four jobs back to back (gather, two
 * expert phases, combine), and a decode step's jobs take a few hundred
 * microseconds, so a futex sleep and wake-up per job (tens of microseconds
 * each) would be a visible share of it. An idle pool still sleeps.
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

/* How long a wait spins before it sleeps. */
#define SPIN_NS 50000

struct thread_pool {
	struct pool base;
	uint32_t n_workers;
	pthread_t *threads;
	uint32_t n_started;

	pthread_mutex_t lock;
	pthread_cond_t wake; /* workers sleep here for a new generation */
	pthread_cond_t idle; /* the caller sleeps here for n_busy == 0 */
	atomic_uint_fast64_t generation;
	atomic_uint n_busy; /* workers still inside the current generation */
	atomic_bool stopping;

	/* the current job: written before generation moves (release), read after
	 * a worker sees the new generation (acquire) */
	pool_task_fn fn;
	void *ctx;
	uint32_t n_tasks;
	atomic_uint next_task;
};

struct worker_arg {
	struct thread_pool *pool;
	uint32_t index;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static void claim_tasks(struct thread_pool *p, uint32_t worker)
{
	for (;;) {
		uint32_t t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);

		if (t >= p->n_tasks)
			return;
		p->fn(p->ctx, t, worker);
	}
}

/* Wait for a generation other than @seen; returns it, or 0 when stopping. */
static uint64_t wait_generation(struct thread_pool *p, uint64_t seen)
{
	uint64_t deadline = now_ns() + SPIN_NS, g;

	for (unsigned i = 0;; i++) {
		/* A1: pairs with R1 in thread_pool_run(): the job's fields are visible */
		g = atomic_load_explicit(&p->generation, memory_order_acquire);
		if (g != seen)
			return g;
		if (atomic_load_explicit(&p->stopping, memory_order_relaxed))
			return 0;
		if ((i & 63) == 63 && now_ns() > deadline)
			break;
		cpu_relax();
	}
	pthread_mutex_lock(&p->lock);
	while (!atomic_load_explicit(&p->stopping, memory_order_relaxed) &&
	       (g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen)
		pthread_cond_wait(&p->wake, &p->lock);
	pthread_mutex_unlock(&p->lock);
	return atomic_load_explicit(&p->stopping, memory_order_relaxed) ? 0 : g;
}

static void *worker_main(void *arg)
{
	struct worker_arg *wa = arg;
	struct thread_pool *p = wa->pool;
	uint32_t index = wa->index;
	uint64_t seen = 0;

	free(wa);
	while ((seen = wait_generation(p, seen)) != 0) {
		claim_tasks(p, index);
		/* R2: the tasks' writes happen before the caller returns; pairs
		 * with A2 in thread_pool_run() */
		if (atomic_fetch_sub_explicit(&p->n_busy, 1, memory_order_acq_rel) == 1) {
			/* under the lock: the caller checks n_busy and sleeps atomically */
			pthread_mutex_lock(&p->lock);
			pthread_cond_signal(&p->idle);
			pthread_mutex_unlock(&p->lock);
		}
	}
	return NULL;
}

static uint32_t thread_pool_n_workers(const struct pool *base)
{
	return ((const struct thread_pool *)base)->n_workers;
}

static void thread_pool_run(struct pool *base, uint32_t n_tasks, pool_task_fn fn, void *ctx)
{
	struct thread_pool *p = (struct thread_pool *)base;
	uint64_t deadline;

	if (n_tasks == 0)
		return;
	if (p->n_started == 0 || n_tasks == 1) {
		/* nothing to share: skip the hand-off */
		for (uint32_t t = 0; t < n_tasks; t++)
			fn(ctx, t, 0);
		return;
	}
	p->fn = fn;
	p->ctx = ctx;
	p->n_tasks = n_tasks;
	atomic_store_explicit(&p->next_task, 0, memory_order_relaxed);
	atomic_store_explicit(&p->n_busy, p->n_started, memory_order_relaxed);
	pthread_mutex_lock(&p->lock);
	/* R1: publishes the job; pairs with A1 in wait_generation() */
	atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);

	claim_tasks(p, 0);

	deadline = now_ns() + SPIN_NS;
	for (unsigned i = 0;; i++) {
		/* A2: pairs with R2 in worker_main(): the workers' results are visible */
		if (atomic_load_explicit(&p->n_busy, memory_order_acquire) == 0)
			return;
		if ((i & 63) == 63 && now_ns() > deadline)
			break;
		cpu_relax();
	}
	pthread_mutex_lock(&p->lock);
	while (atomic_load_explicit(&p->n_busy, memory_order_acquire) > 0)
		pthread_cond_wait(&p->idle, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

static void thread_pool_free(struct pool *base)
{
	struct thread_pool *p = (struct thread_pool *)base;

	pthread_mutex_lock(&p->lock);
	atomic_store_explicit(&p->stopping, true, memory_order_relaxed);
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
