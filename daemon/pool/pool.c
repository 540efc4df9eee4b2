/* SPDX-License-Identifier: MIT */
/*
 * pool: the thread pool's machinery, with several submitters, for the plain
 * pool and for the NUMA pool (pool_nodes.c decides its threads and nodes).
 *
 * Each run() is a job on the caller's stack: fn, ctx, the job's parts (each
 * a range of tasks with a counter of the next task to claim and the node
 * whose threads own it) and a counter of the tasks not finished. A plain
 * run() is one part that every thread owns; run_nodes() makes one part per
 * node (see job_parts_from_nodes()). The job joins a FIFO under the pool's
 * lock; the caller then claims tasks (as worker 0) while the pool's threads
 * claim tasks of the oldest job that still has unclaimed ones they may take
 * (their node's, or any with stealing). The caller returns when its job's
 * `remaining` reaches zero and no pool thread still holds the job
 * (`helpers`), which is the moment the job may leave the caller's stack. No
 * job waits for another job, and no rendezvous of every worker ends a job.
 *
 * Locking: the FIFO, `helpers` and the sleep counters are under `lock`; the
 * parts' `next` and `remaining` are atomics touched by whoever works on the
 * job. The lock is taken twice per job by each thread that works on it,
 * never per task.
 *
 * Waits spin for a short while before they sleep on a condition variable:
 * one forward pass publishes four jobs back to back (gather, two expert
 * phases, combine), and a decode step's jobs take a few hundred
 * microseconds, so a futex sleep and wake-up per job (tens of microseconds
 * each) would be a visible share of it. An idle pool still sleeps.
 *
 * One wake-up condition serves every node: a job wakes all sleeping
 * threads, and those with nothing to claim in it go back to waiting. Jobs
 * are few and large (tiles of expert GEMMs), so the spurious wake-ups cost
 * less than per-node queues would in code.
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"
#include "util/spin.h"

/* How long a wait spins before it sleeps. */
#define SPIN_NS 50000

/* A part's owner when every thread owns it (a plain run()). */
#define NODE_ANY UINT32_MAX
/* The caller's node when no node holds its CPU: it owns no part. */
#define NODE_NONE (UINT32_MAX - 1)
/* cpu_node[] for a CPU no node holds. */
#define CPU_NO_NODE 0xff

/* One per node, plus one for the nodes the pool does not have (node 0's). */
#define POOL_MAX_PARTS (TOPOLOGY_MAX_NODES + 1)

_Static_assert(TOPOLOGY_MAX_NODES < CPU_NO_NODE, "cpu_node[] holds node indices in a byte");

/*
 * Tasks [next, end) not yet claimed. 64 bytes each, so that no two parts'
 * counters share a cache line and the nodes' threads do not pull each
 * other's counters back and forth. Padded rather than alignas(64): the job
 * lives on its caller's stack, and GCC's AddressSanitizer places stack
 * objects at 32-byte alignment whatever they ask for.
 */
struct pool_part {
	atomic_uint next; /* the next task to claim; >= end: all claimed */
	uint32_t end;
	uint32_t node; /* whose threads claim it first; NODE_ANY: everyone's */
	char pad[64 - 3 * sizeof(uint32_t)];
};

_Static_assert(sizeof(struct pool_part) == 64, "one part per 64 bytes");

struct pool_job {
	pool_task_fn fn;
	void *ctx;
	uint32_t n_parts;
	atomic_uint remaining; /* tasks not finished; 0: the job's work is done */
	uint32_t helpers;      /* pool threads holding the job (under lock) */
	struct pool_job *newer; /* FIFO link (under lock) */
	struct pool_part part[POOL_MAX_PARTS];
};

struct pool_node_counters {
	atomic_uint_fast64_t busy_ns, tasks;
	uint32_t threads; /* pinned to the node; set before any job */
	char pad[64 - 2 * sizeof(atomic_uint_fast64_t) - sizeof(uint32_t)];
};

_Static_assert(sizeof(struct pool_node_counters) == 64, "one node's counters per 64 bytes");

struct thread_pool {
	struct pool base;
	uint32_t n_workers;
	uint32_t n_nodes;
	bool steal;
	pthread_t *threads;
	uint32_t n_started;

	pthread_mutex_t lock;
	pthread_cond_t wake; /* pool threads sleep here for a new job */
	pthread_cond_t done; /* callers sleep here for their job's end */
	struct pool_job *oldest, *newest; /* jobs whose callers have not returned */
	uint32_t n_sleeping;              /* pool threads waiting on `wake` */
	atomic_uint_fast64_t posted;      /* jobs ever posted: what a spinning thread watches */
	atomic_bool stopping;

	uint8_t cpu_node[CPU_SETSIZE]; /* the first node holding each CPU, or CPU_NO_NODE */

	/*
	 * Per node, what its threads did (pool_node_stats), written once per
	 * job a thread helps with: last and 64 bytes apart, so that no node's
	 * counters share a cache line with another's or with `posted` above.
	 */
	char pad[64];
	struct pool_node_counters node_stats[TOPOLOGY_MAX_NODES];
};

struct worker_arg {
	struct thread_pool *pool;
	uint32_t index;
	uint32_t node;
};

/* Run @pt's unclaimed tasks; returns how many this worker ran. */
static uint32_t part_claim(struct pool_job *j, struct pool_part *pt, uint32_t worker)
{
	for (uint32_t n = 0;; n++) {
		uint32_t t = atomic_fetch_add_explicit(&pt->next, 1, memory_order_relaxed);

		if (t >= pt->end)
			return n;
		j->fn(j->ctx, t, worker);
		/* R1: the task's writes happen before a caller that sees
		 * remaining == 0 stops spinning; pairs with A1 in job_run()
		 * (the caller then takes the lock, which orders them as well) */
		atomic_fetch_sub_explicit(&j->remaining, 1, memory_order_acq_rel);
	}
}

static bool part_is_own(const struct pool_part *pt, uint32_t node)
{
	return pt->node == node || pt->node == NODE_ANY;
}

/*
 * Claim every task @node's worker may take: its own parts first, then, with
 * @steal, the others', starting at a different part per node so that
 * thieves from several nodes do not all pile onto the same victim.
 */
static uint32_t job_claim(struct pool_job *j, uint32_t node, bool steal, uint32_t worker)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < j->n_parts; i++)
		if (part_is_own(&j->part[i], node))
			n += part_claim(j, &j->part[i], worker);
	if (!steal)
		return n;
	for (uint32_t k = 0; k < j->n_parts; k++) {
		struct pool_part *pt = &j->part[(node + k) % j->n_parts];

		if (!part_is_own(pt, node))
			n += part_claim(j, pt, worker);
	}
	return n;
}

/* Has @j tasks left that @node's worker may claim? */
static bool job_claimable(struct pool_job *j, uint32_t node, bool steal)
{
	for (uint32_t i = 0; i < j->n_parts; i++) {
		struct pool_part *pt = &j->part[i];

		if ((steal || part_is_own(pt, node)) &&
		    atomic_load_explicit(&pt->next, memory_order_relaxed) < pt->end)
			return true;
	}
	return false;
}

/* The oldest job with tasks @node's thread may claim, or NULL. Under lock. */
static struct pool_job *job_to_help(struct thread_pool *p, uint32_t node)
{
	for (struct pool_job *j = p->oldest; j; j = j->newer)
		if (job_claimable(j, node, p->steal))
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

/* job_claim() on a pool thread, its time and tasks counted for its node. */
static void worker_claim(struct thread_pool *p, struct pool_job *j, uint32_t node, uint32_t index)
{
	uint64_t t0 = spin_now_ns();
	uint32_t n = job_claim(j, node, p->steal, index);

	atomic_fetch_add_explicit(&p->node_stats[node].busy_ns, spin_now_ns() - t0,
				  memory_order_relaxed);
	atomic_fetch_add_explicit(&p->node_stats[node].tasks, n, memory_order_relaxed);
}

static void *worker_main(void *arg)
{
	struct worker_arg *wa = arg;
	struct thread_pool *p = wa->pool;
	uint32_t index = wa->index, node = wa->node;

	free(wa);
	pthread_mutex_lock(&p->lock);
	while (!atomic_load_explicit(&p->stopping, memory_order_relaxed)) {
		struct pool_job *j = job_to_help(p, node);

		if (!j) {
			worker_idle(p);
			continue;
		}
		j->helpers++;
		pthread_mutex_unlock(&p->lock);
		worker_claim(p, j, node, index);
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

static uint32_t thread_pool_n_nodes(const struct pool *base)
{
	return ((const struct thread_pool *)base)->n_nodes;
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

/*
 * Post @j (its fn, ctx and parts set) with @n_tasks tasks over its parts,
 * claim what @caller_node's worker may, and return once the job is done
 * and no pool thread holds it.
 */
static void job_run(struct thread_pool *p, struct pool_job *j, uint32_t n_tasks,
		    uint32_t caller_node)
{
	uint64_t deadline;

	atomic_init(&j->remaining, n_tasks);
	j->helpers = 0;
	j->newer = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->newest)
		p->newest->newer = j;
	else
		p->oldest = j;
	p->newest = j;
	atomic_fetch_add_explicit(&p->posted, 1, memory_order_relaxed);
	if (p->n_sleeping)
		pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);

	job_claim(j, caller_node, p->steal, 0);

	deadline = spin_now_ns() + SPIN_NS;
	for (unsigned i = 0;; i++) {
		/* A1: pairs with R1 in part_claim(): every task's writes are visible */
		if (atomic_load_explicit(&j->remaining, memory_order_acquire) == 0)
			break;
		if (!spin_step(i, deadline))
			break;
	}
	pthread_mutex_lock(&p->lock);
	/* a helper may still be between its last claim and the lock: wait for it */
	while (atomic_load_explicit(&j->remaining, memory_order_acquire) != 0 || j->helpers != 0)
		pthread_cond_wait(&p->done, &p->lock);
	job_unlink(p, j);
	pthread_mutex_unlock(&p->lock);
}

static void part_init(struct pool_part *pt, uint32_t begin, uint32_t end, uint32_t node)
{
	atomic_init(&pt->next, begin);
	pt->end = end;
	pt->node = node;
}

static void thread_pool_run(struct pool *base, uint32_t n_tasks, pool_task_fn fn, void *ctx)
{
	struct thread_pool *p = (struct thread_pool *)base;
	struct pool_job j;

	if (n_tasks == 0)
		return;
	if (p->n_started == 0 || n_tasks == 1) {
		/* nothing to share: skip the hand-off */
		for (uint32_t t = 0; t < n_tasks; t++)
			fn(ctx, t, 0);
		return;
	}
	/* only the fields in use: part[] is 4 KiB of cache lines */
	j.fn = fn;
	j.ctx = ctx;
	j.n_parts = 1;
	part_init(&j.part[0], 0, n_tasks, NODE_ANY);
	job_run(p, &j, n_tasks, NODE_ANY);
}

/* Add the part [begin, end) of @node unless it is empty; returns where the next begins. */
static uint32_t job_part_add(struct pool_job *j, uint32_t begin, uint32_t end, uint32_t node)
{
	if (end <= begin)
		return begin; /* empty (or a range that goes backwards: nothing) */
	part_init(&j->part[j->n_parts++], begin, end, node);
	return end;
}

/*
 * The parts of a run_nodes() job: node i's range for each node the pool
 * has, and one more, owned by node 0, for the nodes beyond (their ranges
 * follow each other, so they form one range). Empty ranges are left out, so
 * a node whose range is empty owns no part. Returns the task count.
 */
static uint32_t job_parts_from_nodes(const struct thread_pool *p, struct pool_job *j,
				     uint32_t n_nodes, const uint32_t *node_end)
{
	uint32_t n_own = n_nodes < p->n_nodes ? n_nodes : p->n_nodes;
	uint32_t begin = 0;

	j->n_parts = 0;
	for (uint32_t i = 0; i < n_own; i++)
		begin = job_part_add(j, begin, node_end[i], i);
	if (n_nodes > n_own)
		begin = job_part_add(j, begin, node_end[n_nodes - 1], 0);
	return begin;
}

/* The node whose CPUs include the one the caller runs on (see pool.h). */
static uint32_t caller_node(const struct thread_pool *p)
{
	int cpu;

	if (p->n_nodes == 1)
		return 0;
	/* glibc reads the CPU from rseq or the vDSO: no system call */
	cpu = sched_getcpu();
	if (cpu < 0 || cpu >= CPU_SETSIZE || p->cpu_node[cpu] == CPU_NO_NODE)
		return NODE_NONE;
	return p->cpu_node[cpu];
}

static void thread_pool_run_nodes(struct pool *base, uint32_t n_nodes, const uint32_t *node_end,
				  pool_task_fn fn, void *ctx)
{
	struct thread_pool *p = (struct thread_pool *)base;
	struct pool_job j;
	uint32_t n_tasks;

	if (n_nodes == 0)
		return;
	if (p->n_nodes == 1) {
		/* every node is node 0: the plain path, inline shortcuts included */
		thread_pool_run(base, node_end[n_nodes - 1], fn, ctx);
		return;
	}
	j.fn = fn;
	j.ctx = ctx;
	n_tasks = job_parts_from_nodes(p, &j, n_nodes, node_end);
	if (n_tasks == 0)
		return;
	job_run(p, &j, n_tasks, caller_node(p));
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

static void thread_pool_node_stats(const struct pool *base, uint32_t node,
				   struct pool_node_stats *ret)
{
	struct thread_pool *p = (struct thread_pool *)(uintptr_t)base;

	*ret = (struct pool_node_stats){ 0 };
	if (node >= p->n_nodes)
		return;
	ret->workers = p->node_stats[node].threads;
	ret->busy_ns = atomic_load_explicit(&p->node_stats[node].busy_ns, memory_order_relaxed);
	ret->tasks = atomic_load_explicit(&p->node_stats[node].tasks, memory_order_relaxed);
}

static const struct pool_ops thread_pool_ops = {
	.n_workers = thread_pool_n_workers,
	.n_nodes = thread_pool_n_nodes,
	.run = thread_pool_run,
	.run_nodes = thread_pool_run_nodes,
	.node_stats = thread_pool_node_stats,
	.free = thread_pool_free,
};

/* cpu_node[]: the first node (in index order) whose set holds each CPU. */
static void cpu_node_fill(struct thread_pool *p, const struct topology *t)
{
	memset(p->cpu_node, CPU_NO_NODE, sizeof(p->cpu_node));
	for (uint32_t n = t ? t->n_nodes : 0; n-- > 0;)
		for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
			if (CPU_ISSET(cpu, &t->nodes[n].cpus))
				p->cpu_node[cpu] = (uint8_t)n;
}

/* Start one thread of node @node with worker index @index (pinned with a topology). */
static int thread_start(struct thread_pool *p, const struct topology *t, uint32_t node,
			uint32_t index)
{
	struct worker_arg *wa = malloc(sizeof(*wa));
	pthread_attr_t attr;
	int r;

	if (!wa)
		return -ENOMEM;
	*wa = (struct worker_arg){ p, index, node };
	r = -pthread_attr_init(&attr);
	if (r < 0)
		goto free_arg;
	/* pinned before it runs: its first allocations already land on its node */
	if (t)
		r = -pthread_attr_setaffinity_np(&attr, sizeof(cpu_set_t), &t->nodes[node].cpus);
	if (r == 0)
		r = -pthread_create(&p->threads[p->n_started], &attr, worker_main, wa);
	pthread_attr_destroy(&attr);
	if (r < 0)
		goto free_arg;
	p->n_started++;
	p->node_stats[node].threads++;
	return 0;
free_arg:
	free(wa);
	return r;
}

int pool_layout_start(const struct pool_layout *l, struct pool **ret_pool)
{
	uint32_t n_nodes = l->topo ? l->topo->n_nodes : 1, n_threads = 0, index = 1;
	struct thread_pool *p;
	int r;

	for (uint32_t n = 0; n < n_nodes; n++)
		n_threads += l->node_threads[n];
	if (n_nodes < 1 || n_nodes > TOPOLOGY_MAX_NODES || n_threads >= POOL_MAX_WORKERS)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->base.ops = &thread_pool_ops;
	p->n_workers = n_threads + 1;
	p->n_nodes = n_nodes;
	p->steal = l->steal;
	cpu_node_fill(p, l->topo);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->done, NULL);
	p->threads = calloc(n_threads ? n_threads : 1, sizeof(*p->threads));
	if (!p->threads) {
		r = -ENOMEM;
		goto fail;
	}
	for (uint32_t n = 0; n < n_nodes; n++)
		for (uint32_t i = 0; i < l->node_threads[n]; i++) {
			r = thread_start(p, l->topo, n, index++);
			if (r < 0)
				goto fail;
		}
	*ret_pool = &p->base;
	return 0;
fail:
	thread_pool_free(&p->base);
	return r;
}

static uint32_t allowed_cpus(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) < 0 || CPU_COUNT(&set) < 1)
		return 1;
	return (uint32_t)CPU_COUNT(&set);
}

int pool_threads_new(uint32_t n_workers, struct pool **ret_pool)
{
	struct pool_layout l = { .topo = NULL };

	if (n_workers == 0)
		n_workers = allowed_cpus();
	if (n_workers > POOL_MAX_WORKERS)
		return -EINVAL;
	l.node_threads[0] = n_workers - 1;
	return pool_layout_start(&l, ret_pool);
}
