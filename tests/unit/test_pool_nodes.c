/* SPDX-License-Identifier: MIT */
/*
 * test_pool_nodes: the NUMA pool (pool_nodes_new) on hand-built topologies
 * over CPUs 0 and 1: one node with both; two nodes of one CPU each; four and
 * eight simulated nodes sharing them. The test's thread, the caller of every
 * job, is pinned to CPU 1, so its node is known: node 1 (the first node
 * holding CPU 1) with several nodes, node 0 with one.
 *
 * Each task records how often it ran, the worker index, whether the caller
 * ran it and the affinity of the thread that ran it (sched_getaffinity(0)):
 *
 *   - every task runs exactly once, with or without stealing;
 *   - without stealing, a pool thread runs only tasks of its own node: its
 *     affinity is that node's CPU set (a node index beyond the pool's is
 *     node 0); the caller runs only tasks of its own node;
 *   - with stealing, every task still runs once on some node's thread, and
 *     a node whose only thread is held lets the others take its tasks;
 *   - worker indices are below pool_n_workers(), 0 exactly on the caller,
 *     and never held by two threads at once inside one job;
 *   - the worker counts of pool_nodes_new() (the spread and the caller's
 *     slot) and its refusals.
 */
#include "test_assert.h"
#include "test_threads.h"
#include "test_topo.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "pool/pool.h"
#include "util/spin.h"

#define MAX_TASKS 160
#define MAX_WORKERS 16
#define JOBS_PER_CASE 300
#define CALLER_CPU 1
#define HOLD_TIMEOUT_NS (10ull * 1000000000ull)

struct task_rec {
	atomic_uint runs;
	uint32_t worker;
	bool on_caller;
	cpu_set_t cpus; /* the affinity of the thread that ran it */
};

struct job {
	pthread_t caller;
	uint32_t n_workers;
	uint32_t n_tasks;
	uint32_t node[MAX_TASKS]; /* the node (index given to run_nodes) of each task */
	struct task_rec rec[MAX_TASKS];
	atomic_bool in_use[MAX_WORKERS];
	/* test_steal_unblocks: node 0's thread holds its first task until another took one */
	const cpu_set_t *hold_cpus;
	atomic_uint n_taken_elsewhere;
};

static void job_init(struct job *j, const struct pool *p)
{
	memset(j, 0, sizeof(*j));
	j->caller = pthread_self();
	j->n_workers = pool_n_workers(p);
	assert_true(j->n_workers <= MAX_WORKERS);
}

/* Hold while the thread is node 0's (by affinity) until a task ran elsewhere. */
static void task_hold(struct job *j, const cpu_set_t *cpus)
{
	uint64_t deadline = spin_now_ns() + HOLD_TIMEOUT_NS;

	if (!CPU_EQUAL(cpus, j->hold_cpus) || pthread_equal(pthread_self(), j->caller)) {
		atomic_fetch_add(&j->n_taken_elsewhere, 1);
		return;
	}
	while (atomic_load(&j->n_taken_elsewhere) == 0) {
		if (spin_now_ns() > deadline) {
			record_error("node 0's thread held its task %llu s: nobody stole",
				     (unsigned long long)(HOLD_TIMEOUT_NS / 1000000000ull));
			return;
		}
		sched_yield();
	}
}

static void task_record(void *arg, uint32_t task, uint32_t worker)
{
	struct job *j = arg;
	struct task_rec *r;

	if (task >= j->n_tasks || worker >= j->n_workers) {
		record_error("task %u of %u, worker %u of %u", task, j->n_tasks, worker,
			     j->n_workers);
		return;
	}
	r = &j->rec[task];
	if (atomic_exchange(&j->in_use[worker], true))
		record_error("task %u: worker %u already in use in this job", task, worker);
	atomic_fetch_add(&r->runs, 1);
	r->worker = worker;
	r->on_caller = pthread_equal(pthread_self(), j->caller);
	if (sched_getaffinity(0, sizeof(r->cpus), &r->cpus) < 0)
		record_error("sched_getaffinity: %s", strerror(errno));
	if (j->hold_cpus)
		task_hold(j, &r->cpus);
	for (volatile unsigned i = 0; i < (task * 37) % 2000; i++)
		;
	atomic_store(&j->in_use[worker], false);
}

/* The node whose threads must run a task given to run_nodes() as node @n. */
static uint32_t effective_node(const struct pool *p, uint32_t n)
{
	return n < pool_n_nodes(p) ? n : 0;
}

static bool is_some_node(const struct topology *t, const cpu_set_t *cpus)
{
	for (uint32_t i = 0; i < t->n_nodes; i++)
		if (CPU_EQUAL(cpus, &t->nodes[i].cpus))
			return true;
	return false;
}

/* After the job returned: every record as the pool's contract says. */
static void job_check(const struct job *j, const struct pool *p, const struct topology *t,
		      bool steal)
{
	uint32_t caller_node = pool_n_nodes(p) == 1 ? 0 : CALLER_CPU;

	for (uint32_t i = 0; i < j->n_tasks; i++) {
		const struct task_rec *r = &j->rec[i];
		uint32_t node = effective_node(p, j->node[i]);
		unsigned runs = atomic_load(&r->runs);

		if (runs != 1) {
			record_error("task %u (node %u) ran %u times", i, j->node[i], runs);
			return;
		}
		if (r->on_caller != (r->worker == 0))
			record_error("task %u: worker %u on %s", i, r->worker,
				     r->on_caller ? "the caller" : "a pool thread");
		if (r->on_caller) {
			if (!steal && node != caller_node)
				record_error("task %u of node %u ran on the caller (node %u)", i,
					     node, caller_node);
		} else if (steal ? !is_some_node(t, &r->cpus)
				 : !CPU_EQUAL(&r->cpus, &t->nodes[node].cpus)) {
			record_error("task %u of node %u ran on a thread pinned elsewhere (%d "
				     "CPUs, CPU 0 %s)",
				     i, node, CPU_COUNT(&r->cpus),
				     CPU_ISSET(0, &r->cpus) ? "in" : "out");
		}
	}
	for (uint32_t w = 0; w < j->n_workers; w++)
		if (atomic_load(&j->in_use[w]))
			record_error("worker %u still in a task after the job returned", w);
}

/*
 * A random split of @n_tasks over @n_nodes node indices (some empty) into
 * @node_end, and each task's node into @j.
 */
static void split_random(struct job *j, uint32_t n_tasks, uint32_t n_nodes, uint32_t *node_end,
			 uint64_t *rng)
{
	uint32_t begin = 0;

	j->n_tasks = n_tasks;
	for (uint32_t k = 0; k < n_nodes; k++) {
		uint32_t left = n_tasks - begin, take;

		*rng = mix64(*rng + k);
		take = (uint32_t)(*rng % (left + 1));
		if (*rng >> 60 == 0)
			take = 0; /* now and then an empty node */
		if (k + 1 == n_nodes)
			take = left; /* the last node takes the rest: every task has a node */
		for (uint32_t i = begin; i < begin + take; i++)
			j->node[i] = k;
		begin += take;
		node_end[k] = begin;
	}
}

static struct pool *pool_on(const struct topology *t, uint32_t n_workers, bool steal)
{
	struct pool *p = NULL;

	ASSERT_OK(pool_nodes_new(t, n_workers, steal, &p));
	return p;
}

/* ---------------------------------------------------------------- tests */

static const uint32_t topo_nodes[] = { 1, 2, 4, 8 };
static const uint32_t task_counts[] = { 1, 2, 3, 7, 40, MAX_TASKS };

static void run_nodes_jobs(bool steal)
{
	static struct job j;

	for (size_t ti = 0; ti < sizeof(topo_nodes) / sizeof(topo_nodes[0]); ti++) {
		struct topology t;
		struct pool *p;
		uint64_t rng = 1234 + ti;

		test_topo_make(&t, topo_nodes[ti]);
		p = pool_on(&t, 0, steal);
		ASSERT_EQ(pool_n_nodes(p), topo_nodes[ti]);
		for (unsigned n = 0; n < JOBS_PER_CASE; n++) {
			/* as many node indices as the pool has, fewer, and more */
			uint32_t n_nodes = 1 + n % (topo_nodes[ti] + 2);
			uint32_t node_end[TOPOLOGY_MAX_NODES + 2];
			uint32_t n_tasks = task_counts[n % (sizeof(task_counts) /
							    sizeof(task_counts[0]))];

			job_init(&j, p);
			split_random(&j, n_tasks, n_nodes, node_end, &rng);
			pool_run_nodes(p, n_nodes, node_end, task_record, &j);
			job_check(&j, p, &t, steal);
			if (recorded_errors()) {
				print_message("%u nodes%s, job %u (%u tasks over %u node "
					      "indices):\n",
					      topo_nodes[ti], steal ? " steal" : "", n, n_tasks,
					      n_nodes);
				assert_no_errors();
			}
		}
		pool_free(p);
	}
	assert_no_errors();
}

static void test_run_nodes_no_steal(void **state)
{
	(void)state;
	run_nodes_jobs(false);
}

static void test_run_nodes_steal(void **state)
{
	(void)state;
	run_nodes_jobs(true);
}

/* run() on a NUMA pool: every task once, on any node's thread or the caller. */
static void test_plain_run_on_nodes(void **state)
{
	static struct job j;

	(void)state;
	for (size_t ti = 0; ti < sizeof(topo_nodes) / sizeof(topo_nodes[0]); ti++) {
		struct topology t;
		struct pool *p;

		test_topo_make(&t, topo_nodes[ti]);
		p = pool_on(&t, 0, false);
		for (unsigned n = 0; n < JOBS_PER_CASE / 3; n++) {
			job_init(&j, p);
			j.n_tasks = task_counts[n % (sizeof(task_counts) / sizeof(task_counts[0]))];
			pool_run(p, j.n_tasks, task_record, &j);
			job_check(&j, p, &t, true);
		}
		pool_free(p);
	}
	assert_no_errors();
}

/*
 * Stealing really happens: on 2 nodes every task belongs to node 0, whose
 * one thread holds its first task until some other thread (node 1's, or
 * the caller on node 1) has taken one. Without stealing this would wait
 * for the timeout.
 */
static void test_steal_unblocks(void **state)
{
	static struct job j;
	uint32_t node_end[2] = { 20, 20 };
	struct topology t;
	struct pool *p;

	(void)state;
	test_topo_make(&t, 2);
	p = pool_on(&t, 0, true);
	for (unsigned n = 0; n < 20; n++) {
		job_init(&j, p);
		j.n_tasks = 20;
		j.hold_cpus = &t.nodes[0].cpus;
		pool_run_nodes(p, 2, node_end, task_record, &j);
		job_check(&j, p, &t, true);
	}
	pool_free(p);
	assert_no_errors();
}

static void task_sleep(void *ctx, uint32_t task, uint32_t worker)
{
	const struct timespec ts = { .tv_nsec = 200 * 1000 };

	(void)ctx, (void)task, (void)worker;
	nanosleep(&ts, NULL);
}

/*
 * pool_node_stats(): each node's threads counted where they are pinned,
 * their tasks (the caller's not) and at least the time those tasks slept.
 */
static void test_node_stats(void **state)
{
	uint32_t node_end[2] = { 50, 100 };
	struct pool_node_stats st[3];
	struct topology t;
	struct pool *p;
	uint64_t tasks;

	(void)state;
	test_topo_make(&t, 2);
	p = pool_on(&t, 4, false);
	for (uint32_t n = 0; n < 3; n++) {
		pool_node_stats(p, n, &st[n]);
		ASSERT_EQ(st[n].tasks, 0);
		ASSERT_EQ(st[n].busy_ns, 0);
	}
	ASSERT_EQ(st[0].workers + st[1].workers + 1, pool_n_workers(p));
	ASSERT_EQ(st[2].workers, 0); /* no node 2 */
	pool_run_nodes(p, 2, node_end, task_sleep, NULL);
	pool_node_stats(p, 0, &st[0]);
	pool_node_stats(p, 1, &st[1]);
	tasks = st[0].tasks + st[1].tasks;
	/* the caller runs on node 1 (CALLER_CPU) and does not steal: node 0's
	 * threads ran all of node 0's tasks; node 1's shared theirs with it */
	ASSERT_EQ(st[0].tasks, 50);
	assert_true(st[1].tasks <= 50);
	assert_true(tasks <= 100);
	assert_true(st[0].busy_ns >= st[0].tasks * 200 * 1000);
	assert_true(st[1].busy_ns >= st[1].tasks * 200 * 1000);
	pool_free(p);
}

static void test_worker_counts(void **state)
{
	static const struct {
		uint32_t n_nodes, n_workers, expect;
	} cases[] = {
		{ 1, 0, 2 }, { 1, 1, 1 }, { 1, 3, 3 },  /* one node: as the plain pool */
		{ 2, 0, 3 }, { 2, 1, 3 }, { 2, 2, 3 },  /* each node keeps its thread */
		{ 2, 4, 4 }, { 2, 5, 5 }, { 4, 0, 5 },
		{ 4, 8, 8 }, { 8, 0, 9 }, { 8, 3, 9 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct topology t;
		struct pool *p;

		test_topo_make(&t, cases[i].n_nodes);
		p = pool_on(&t, cases[i].n_workers, false);
		if (pool_n_workers(p) != cases[i].expect)
			fail_msg("%u nodes, n_workers %u: %u workers, expected %u",
				 cases[i].n_nodes, cases[i].n_workers, pool_n_workers(p),
				 cases[i].expect);
		pool_free(p);
	}
}

static void test_refused(void **state)
{
	struct topology t;
	struct pool *p = NULL;

	(void)state;
	ASSERT_ERRNO(pool_nodes_new(NULL, 0, false, &p), EINVAL);
	test_topo_make(&t, 2);
	ASSERT_ERRNO(pool_nodes_new(&t, POOL_MAX_WORKERS + 1, false, &p), EINVAL);
	t.n_nodes = 0;
	ASSERT_ERRNO(pool_nodes_new(&t, 0, false, &p), EINVAL);
	t.n_nodes = TOPOLOGY_MAX_NODES + 1;
	ASSERT_ERRNO(pool_nodes_new(&t, 0, false, &p), EINVAL);
	test_topo_make(&t, 2);
	CPU_ZERO(&t.nodes[1].cpus);
	ASSERT_ERRNO(pool_nodes_new(&t, 0, false, &p), EINVAL);
	/* a CPU this process may not run on: pthread_create() refuses the
	 * affinity, and the threads already started are stopped */
	test_topo_make(&t, 2);
	CPU_ZERO(&t.nodes[1].cpus);
	CPU_SET(CPU_SETSIZE - 1, &t.nodes[1].cpus);
	assert_true(pool_nodes_new(&t, 0, false, &p) < 0);
	assert_null(p);
}

static int pin_caller(void **state)
{
	cpu_set_t set;

	(void)state;
	reset_errors();
	CPU_ZERO(&set);
	CPU_SET(CALLER_CPU, &set);
	return sched_setaffinity(0, sizeof(set), &set) < 0 ? -1 : 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_worker_counts, pin_caller),
		cmocka_unit_test_setup(test_refused, pin_caller),
		cmocka_unit_test_setup(test_run_nodes_no_steal, pin_caller),
		cmocka_unit_test_setup(test_run_nodes_steal, pin_caller),
		cmocka_unit_test_setup(test_plain_run_on_nodes, pin_caller),
		cmocka_unit_test_setup(test_steal_unblocks, pin_caller),
		cmocka_unit_test_setup(test_node_stats, pin_caller),
	};

	if (!test_topo_cpus_allowed()) {
		fprintf(stderr, "test_pool_nodes: needs CPUs 0 and 1 (the hand-built topologies "
				"use them), skipping\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
