/* SPDX-License-Identifier: MIT */
/*
 * pool: the plain thread pool, with several submitters.
 *
 * Each run() is a job on the caller's stack: fn, ctx, n_tasks, a counter of
 * the next task to claim and a counter of the tasks not finished. The job
 * joins a FIFO under the pool's lock; the caller then claims its own tasks
 * (as worker 0) while the pool's threads claim tasks of the oldest job that
 * still has unclaimed ones. The caller returns when its job's `remaining`
 * reaches zero and no pool thread still holds the job (`helpers`), which is
 * the moment the job may leave the caller's stack. No job waits for another
 * job, and no rendezvous of every worker ends a job.
 *
 * Locking: the FIFO, `helpers` and the sleep counters are under `lock`;
 * `next` and `remaining` are atomics touched by whoever works on the job.
 * The lock is taken twice per job by each thread that works on it, never per
 * task.
 *
 * Waits spin for a short while before they sleep on a condition variable:
 * one forward pass publishes four jobs back to back (gather, two expert
 * phases, combine), and a decode step's jobs take a few hundred
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

#include "util/spin.h"

/* How long a wait spins before it sleeps. */
#define SPIN_NS 50000

struct pool_job {
	pool_task_fn fn;
	void *ctx;
	uint32_t n_tasks;
	atomic_uint next;      /* the next task to claim; >= n_tasks: all claimed */
	atomic_uint remaining; /* tasks not finished; 0: the job's work is done */
	uint32_t helpers;      /* pool threads holding the job (under lock) */
	struct pool_job *newer; /* FIFO link (under lock) */
};

struct thread_pool {
	struct pool base;
	uint32_t n_workers;
	pthread_t *threads;
	uint32_t n_started;

	pthread_mutex_t lock;
	pthread_cond_t wake; /* pool threads sleep here for a new job */
	pthread_cond_t done; /* callers sleep here for their job's end */
	struct pool_job *oldest, *newest; /* jobs whose callers have not returned */
	uint32_t n_sleeping;              /* pool threads waiting on `wake` */
	atomic_uint_fast64_t posted;      /* jobs ever posted: what a spinning thread watches */
	atomic_bool stopping;
};

struct worker_arg {
	struct thread_pool *pool;
	uint32_t index;
};

static void claim_tasks(struct pool_job *j, uint32_t worker)
{
	for (;;) {
		uint32_t t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);

		if (t >= j->n_tasks)
			return;
		j->fn(j->ctx, t, worker);
		/* R1: the task's writes happen before a caller that sees
		 * remaining == 0 stops spinning; pairs with A1 in
		 * thread_pool_run() (the caller then takes the lock, which
		 * orders them as well) */
		atomic_fetch_sub_explicit(&j->remaining, 1, memory_order_acq_rel);
	}
}

/* The oldest job with unclaimed tasks, or NULL. Under lock. */
static struct pool_job *job_to_help(struct thread_pool *p)
{
	for (struct pool_job *j = p->oldest; j; j = j->newer)
		if (atomic_load_explicit(&j->next, memory_order_relaxed) < j->n_tasks)
			return j;
	return NULL;
}

/* Nothing to do: spin until a job is posted, then sleep. Called and returns under lock. */
static void worker_idle(struct thread_pool *p)
{
	uint64_t seen = atomic_load_explicit(&p->posted, memory_order_relaxed);
	uint64_t deadline = spin_now_ns() + SPIN_NS;

	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0;; i++) {
		if (atomic_load_explicit(&p->posted, memory_order_relaxed) != seen ||
		    atomic_load_explicit(&p->stopping, memory_order_relaxed))
			break;
		if (!spin_step(i, deadline))
			break;
	}
	pthread_mutex_lock(&p->lock);
	/* `posted` moves under the lock, so this check and the wait are atomic */
	if (atomic_load_explicit(&p->posted, memory_order_relaxed) == seen &&
	    !atomic_load_explicit(&p->stopping, memory_order_relaxed)) {
		p->n_sleeping++;
		pthread_cond_wait(&p->wake, &p->lock);
		p->n_sleeping--;
	}
}

static void *worker_main(void *arg)
{
	struct worker_arg *wa = arg;
	struct thread_pool *p = wa->pool;
	uint32_t index = wa->index;

	free(wa);
	pthread_mutex_lock(&p->lock);
	while (!atomic_load_explicit(&p->stopping, memory_order_relaxed)) {
		struct pool_job *j = job_to_help(p);

		if (!j) {
			worker_idle(p);
			continue;
		}
		j->helpers++;
		pthread_mutex_unlock(&p->lock);
		claim_tasks(j, index);
		pthread_mutex_lock(&p->lock);
		/* the last helper to leave a finished job lets its caller go */
		if (--j->helpers == 0 && atomic_load_explicit(&j->remaining, memory_order_acquire) == 0)
			pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static uint32_t thread_pool_n_workers(const struct pool *base)
{
	return ((const struct thread_pool *)base)->n_workers;
}

static void job_unlink(struct thread_pool *p, struct pool_job *j)
{
	struct pool_job **link = &p->oldest, *prev = NULL;

	while (*link != j) {
		prev = *link;
		link = &(*link)->newer;
	}
	*link = j->newer;
	if (p->newest == j)
		p->newest = prev;
}

static void thread_pool_run(struct pool *base, uint32_t n_tasks, pool_task_fn fn, void *ctx)
{
	struct thread_pool *p = (struct thread_pool *)base;
	struct pool_job j = { .fn = fn, .ctx = ctx, .n_tasks = n_tasks };
	uint64_t deadline;

	if (n_tasks == 0)
		return;
	if (p->n_started == 0 || n_tasks == 1) {
		/* nothing to share: skip the hand-off */
		for (uint32_t t = 0; t < n_tasks; t++)
			fn(ctx, t, 0);
		return;
	}
	atomic_init(&j.next, 0);
	atomic_init(&j.remaining, n_tasks);
	pthread_mutex_lock(&p->lock);
	if (p->newest)
		p->newest->newer = &j;
	else
		p->oldest = &j;
	p->newest = &j;
	atomic_fetch_add_explicit(&p->posted, 1, memory_order_relaxed);
	if (p->n_sleeping)
		pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);

	claim_tasks(&j, 0);

	deadline = spin_now_ns() + SPIN_NS;
	for (unsigned i = 0;; i++) {
		/* A1: pairs with R1 in claim_tasks(): every task's writes are visible */
		if (atomic_load_explicit(&j.remaining, memory_order_acquire) == 0)
			break;
		if (!spin_step(i, deadline))
			break;
	}
	pthread_mutex_lock(&p->lock);
	/* a helper may still be between its last claim and the lock: wait for it */
	while (atomic_load_explicit(&j.remaining, memory_order_acquire) != 0 || j.helpers != 0)
		pthread_cond_wait(&p->done, &p->lock);
	job_unlink(p, &j);
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
	pthread_cond_destroy(&p->done);
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
	pthread_cond_init(&p->done, NULL);
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
