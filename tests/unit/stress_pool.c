/* SPDX-License-Identifier: MIT */
/*
 * stress_pool: the thread pool (daemon/pool) with several submitters at
 * once, as moed's executor runs several engine runs in flight. Each task
 * stamps ownership (STYLE 16b) on its job's context, which lives on the
 * submitter's stack:
 *
 *   - every task runs exactly once: a per-task counter must read 1 after
 *     pool_run() returns (0: skipped, 2: run twice);
 *   - worker ids: worker < n_workers; worker 0 is the caller and only the
 *     caller; no two threads hold one worker id inside one job at one time
 *     (an atomic "in use" flag per (job, worker), set by exchange: finding
 *     it already set is the failure), and no flag is still set when
 *     pool_run() returns (a task still running after its job "ended");
 *   - visibility: each task writes a plain (non-atomic) result that the
 *     submitter reads after pool_run() returns. The test's own atomics are
 *     all relaxed, so the only happens-before edge is the pool's: without
 *     it ThreadSanitizer reports the race (and a stale value fails the check);
 *   - nothing touches a job after its pool_run() returned: the submitter
 *     poisons its context at once and the next job reuses the stack, at a
 *     different depth each time so that the pool's own job record lands at
 *     other addresses. A straggler sees the poison (failure), TSan sees the
 *     race with the memset, ASan (fake stacks on) the use after return.
 *
 * The NUMA pool (pool_nodes_new() on hand-built topologies of 2 and 4
 * nodes over CPUs 0 and 1, with and without stealing) goes through the same
 * submitters and checks with run_nodes() jobs whose tasks are split at
 * random over node indices, some empty, some beyond the pool's nodes.
 *
 * Failures inside threads are recorded (first message kept) and asserted by
 * the test's own thread: CMocka's assertions must not longjmp from others.
 *
 * Usage: stress_pool [ITERATIONS]: jobs per submitter in the main case
 * (default DEFAULT_ITERS, or $MOE_STRESS_ITERS; ctest passes fewer under
 * the sanitizers). Exit 0 on success, 1 on a failed check.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_assert.h"
#include "test_threads.h"
#include "test_topo.h"

#include "pool/pool.h"
#include "util/spin.h"

#define DEFAULT_ITERS   20000
#define MAX_SUBMITTERS  4
#define MAX_WORKERS     8
#define MAX_NODE_INDICES 6
#define MAX_TASKS       257
#define JOB_LIVE        0x10b11fe5u
#define POISON_BYTE     0xa5
#define GATE_TIMEOUT_NS (60ull * 1000000000ull)

/* gcc says __SANITIZE_ADDRESS__, clang __has_feature(address_sanitizer) */
#if defined(__SANITIZE_ADDRESS__)
#define STRESS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STRESS_ASAN 1
#endif
#endif
#ifdef STRESS_ASAN
/* Fake stacks, so that a pool thread touching a returned pool_run()'s job
 * (or a returned submitter's context) is a stack-use-after-return report. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "detect_stack_use_after_return=1";
}
#endif

static unsigned long arg_iters = DEFAULT_ITERS;

/* ------------------------------------------------------------ setup */

static int reset_errors_setup(void **state)
{
	(void)state;
	reset_errors();
	return 0;
}

/* ------------------------------------------------------------ helpers */

/* Uneven tasks: a few spins mostly, now and then a yield, so that the two
 * cores' threads are preempted in the middle of jobs. */
static void task_delay(uint64_t h)
{
	unsigned spins = (unsigned)(h & 63);

	if ((h >> 8) % 61 == 0)
		sched_yield();
	for (volatile unsigned i = 0; i < spins; i++)
		;
}

/* ------------------------------------------------------------ one job */

struct job_ctx {
	uint32_t magic; /* JOB_LIVE while the job runs; poisoned after */
	uint32_t n_tasks, n_workers;
	uint64_t seed;
	pthread_t caller;
	atomic_uint runs[MAX_TASKS];     /* per task: times run */
	atomic_bool in_use[MAX_WORKERS]; /* per worker id: held right now */
	uint64_t out[MAX_TASKS];         /* plain: what each task computed */
	/* gated jobs (test_pool_helpers_stuck): tasks wait for the gate */
	atomic_bool *gate;
	atomic_uint *n_gated; /* gated tasks started */
};

static uint64_t task_value(const struct job_ctx *c, uint32_t task)
{
	return mix64(c->seed ^ ((uint64_t)task << 40) ^ 0x5eed);
}

static void wait_gate(struct job_ctx *c)
{
	uint64_t deadline = spin_now_ns() + GATE_TIMEOUT_NS;

	atomic_fetch_add_explicit(c->n_gated, 1, memory_order_relaxed);
	while (!atomic_load_explicit(c->gate, memory_order_relaxed)) {
		if (spin_now_ns() > deadline) {
			record_error("gated task waited over %llu s",
			             (unsigned long long)(GATE_TIMEOUT_NS / 1000000000ull));
			return;
		}
		sched_yield();
	}
}

static void stamp_task(void *arg, uint32_t task, uint32_t worker)
{
	struct job_ctx *c = arg;
	bool is_caller;

	/* Only relaxed atomics here: the pool alone must order the plain data. */
	if (c->magic != JOB_LIVE) {
		record_error("task %u (worker %u) ran on a dead job (magic %#x)", task, worker,
		             c->magic);
		return;
	}
	if (task >= c->n_tasks) {
		record_error("task %u of a job of %u tasks", task, c->n_tasks);
		return;
	}
	if (worker >= c->n_workers) {
		record_error("worker id %u on a pool of %u workers", worker, c->n_workers);
		return;
	}
	is_caller = pthread_equal(pthread_self(), c->caller);
	if (is_caller != (worker == 0))
		record_error("task %u: worker id %u on %s thread", task, worker,
		             is_caller ? "the caller's" : "a pool");
	if (atomic_exchange_explicit(&c->in_use[worker], true, memory_order_relaxed))
		record_error("task %u: worker id %u already in use in this job", task, worker);
	atomic_fetch_add_explicit(&c->runs[task], 1, memory_order_relaxed);
	if (c->gate)
		wait_gate(c);
	else
		task_delay(task_value(c, task));
	c->out[task] = task_value(c, task);
	atomic_store_explicit(&c->in_use[worker], false, memory_order_relaxed);
}

static void job_init(struct job_ctx *c, uint32_t n_tasks, uint32_t n_workers, uint64_t seed)
{
	memset(c, 0, sizeof(*c));
	c->magic = JOB_LIVE;
	c->n_tasks = n_tasks;
	c->n_workers = n_workers;
	c->seed = seed;
	c->caller = pthread_self();
	for (uint32_t t = 0; t < MAX_TASKS; t++)
		atomic_init(&c->runs[t], 0);
	for (uint32_t w = 0; w < MAX_WORKERS; w++)
		atomic_init(&c->in_use[w], false);
}

/* After pool_run() returned: every stamp as it must be, then poison. */
static void job_check_and_poison(struct job_ctx *c)
{
	for (uint32_t t = 0; t < c->n_tasks; t++) {
		unsigned runs = atomic_load_explicit(&c->runs[t], memory_order_relaxed);

		if (runs != 1) {
			record_error("task %u of %u ran %u times", t, c->n_tasks, runs);
			break;
		}
		if (c->out[t] != task_value(c, t)) {
			record_error("task %u of %u: result %#" PRIx64 " not visible after return "
			             "(expected %#" PRIx64 ")",
			             t, c->n_tasks, c->out[t], task_value(c, t));
			break;
		}
	}
	for (uint32_t t = c->n_tasks; t < MAX_TASKS; t++)
		if (atomic_load_explicit(&c->runs[t], memory_order_relaxed)) {
			record_error("task %u beyond n_tasks %u ran", t, c->n_tasks);
			break;
		}
	for (uint32_t w = 0; w < MAX_WORKERS; w++)
		if (atomic_load_explicit(&c->in_use[w], memory_order_relaxed))
			record_error("worker %u still inside a task after pool_run() returned", w);
	/* plain writes over everything: a straggler races with these (TSan) */
	memset(c, POISON_BYTE, sizeof(*c));
}

/*
 * run_nodes() with @n_tasks split at random (from @seed) over 1 to
 * pool_n_nodes() + 1 node indices, now and then one left empty.
 */
static void run_nodes_split(struct pool *p, uint32_t n_tasks, uint64_t seed, struct job_ctx *c)
{
	uint32_t n_nodes = 1 + (uint32_t)(seed % (pool_n_nodes(p) + 1)), begin = 0;
	uint32_t node_end[MAX_NODE_INDICES];

	for (uint32_t k = 0; k < n_nodes; k++) {
		uint64_t h = mix64(seed + k);
		uint32_t left = n_tasks - begin;
		uint32_t take = (uint32_t)(h % (left + 1));

		if (k + 1 == n_nodes)
			take = left;
		else if (h >> 61 == 0)
			take = 0; /* now and then an empty node */
		begin += take;
		node_end[k] = begin;
	}
	pool_run_nodes(p, n_nodes, node_end, stamp_task, c);
}

/* One job whose context sits @depth frames further down the stack. */
static void run_job_at_depth(struct pool *p, unsigned depth, uint32_t n_tasks, uint64_t seed,
                             bool nodes)
{
	if (depth > 0) {
		volatile char pad[96];

		pad[0] = (char)depth;
		run_job_at_depth(p, depth - 1, n_tasks, seed, nodes);
		pad[95] = pad[0];
		return;
	}
	struct job_ctx c;

	job_init(&c, n_tasks, pool_n_workers(p), seed);
	if (nodes)
		run_nodes_split(p, n_tasks, seed, &c);
	else
		pool_run(p, n_tasks, stamp_task, &c);
	job_check_and_poison(&c);
}

/* ------------------------------------------------------------ (a) submitters */

static const uint32_t task_counts[] = {0, 1, 2, 3, 4, 7, 16, 100, MAX_TASKS};

struct submitter {
	struct pool *pool;
	uint32_t id;
	unsigned long iters;
	atomic_bool *stop; /* NULL: run iters jobs; else until set */
	bool nodes;        /* run_nodes() jobs rather than run() */
	unsigned long done;
	pthread_t thread;
};

static void *submitter_main(void *arg)
{
	struct submitter *s = arg;
	uint64_t rng = mix64(0xabcdefull + s->id);

	for (unsigned long i = 0; s->stop ? !atomic_load(s->stop) : i < s->iters; i++) {
		uint32_t n;

		rng = mix64(rng + i);
		n = task_counts[rng % (sizeof(task_counts) / sizeof(task_counts[0]))];
		run_job_at_depth(s->pool, (unsigned)(rng >> 32) % 5, n, rng, s->nodes);
		s->done++;
	}
	return NULL;
}

/* @nodes: every submitter but the first posts run_nodes() jobs. */
static void start_submitters(struct submitter *subs, uint32_t n, struct pool *p,
                             unsigned long iters, atomic_bool *stop, bool nodes)
{
	for (uint32_t i = 0; i < n; i++) {
		subs[i] = (struct submitter){
		    .pool = p, .id = i, .iters = iters, .stop = stop, .nodes = nodes && i > 0};
		ASSERT_EQ(pthread_create(&subs[i].thread, NULL, submitter_main, &subs[i]), 0);
	}
}

static unsigned long join_submitters(struct submitter *subs, uint32_t n)
{
	unsigned long jobs = 0;

	for (uint32_t i = 0; i < n; i++) {
		ASSERT_EQ(pthread_join(subs[i].thread, NULL), 0);
		jobs += subs[i].done;
	}
	return jobs;
}

/* (a): 2-4 workers, 3-4 submitters, thousands of jobs each, every stamp checked. */
static void test_pool_many_submitters(void **state)
{
	static const struct {
		uint32_t n_workers, n_submitters;
	} shapes[] = {{2, 3}, {3, 4}, {4, 4}, {4, 3}};

	(void)state;
	for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
		struct submitter subs[MAX_SUBMITTERS];
		struct pool *p = NULL;
		uint64_t t0 = spin_now_ns();
		unsigned long jobs;

		ASSERT_OK(pool_threads_new(shapes[k].n_workers, &p));
		ASSERT_EQ(pool_n_workers(p), shapes[k].n_workers);
		start_submitters(subs, shapes[k].n_submitters, p, arg_iters, NULL, false);
		jobs = join_submitters(subs, shapes[k].n_submitters);
		p = pool_free(p);
		print_message("  %u workers, %u submitters: %lu jobs in %.2f s\n",
		              shapes[k].n_workers, shapes[k].n_submitters, jobs,
		              (double)(spin_now_ns() - t0) / 1e9);
		ASSERT_EQ(jobs, arg_iters * shapes[k].n_submitters);
		assert_no_errors();
	}
}

/*
 * (a'): the NUMA pool, 3 submitters of run_nodes() jobs (and one of plain
 * run() jobs beside them), on 2 and 4 nodes, with and without stealing.
 */
static void test_pool_nodes_many_submitters(void **state)
{
	static const struct {
		uint32_t n_nodes;
		bool steal;
	} shapes[] = {{2, false}, {2, true}, {4, false}, {4, true}};

	(void)state;
	if (!test_topo_cpus_allowed()) {
		print_message("  needs CPUs 0 and 1 for its topologies, skipped\n");
		skip();
	}
	for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
		struct submitter subs[MAX_SUBMITTERS];
		struct topology t;
		struct pool *p = NULL;
		uint64_t t0 = spin_now_ns();
		unsigned long jobs;

		test_topo_make(&t, shapes[k].n_nodes);
		ASSERT_OK(pool_nodes_new(&t, 0, shapes[k].steal, &p));
		assert_true(pool_n_workers(p) <= MAX_WORKERS);
		start_submitters(subs, 4, p, arg_iters / 4, NULL, true);
		jobs = join_submitters(subs, 4);
		p = pool_free(p);
		print_message("  %u nodes%s: %lu jobs in %.2f s\n", shapes[k].n_nodes,
		              shapes[k].steal ? " steal" : "", jobs,
		              (double)(spin_now_ns() - t0) / 1e9);
		ASSERT_EQ(jobs, 4 * (arg_iters / 4));
		assert_no_errors();
	}
}

/* ------------------------------------------------------------ (b) stuck helpers */

struct gated_caller {
	struct pool *pool;
	atomic_bool gate;
	atomic_uint n_gated;
	pthread_t thread;
};

static void *gated_caller_main(void *arg)
{
	struct gated_caller *g = arg;
	struct job_ctx c;
	uint32_t n = pool_n_workers(g->pool);

	/* as many tasks as workers: every pool thread can end up stuck in one */
	job_init(&c, n, n, 42);
	c.gate = &g->gate;
	c.n_gated = &g->n_gated;
	pool_run(g->pool, n, stamp_task, &c);
	job_check_and_poison(&c);
	return NULL;
}

/*
 * (b): one job holds the pool threads (its tasks wait on a gate) while other
 * submitters run thousands of jobs, each ending, being poisoned and its
 * stack reused while the held job is still running: no job waits for
 * another, and when the gate opens the freed pool threads walk the job list
 * again, which must no longer reach any of the returned jobs. Then the same
 * again with the gate opening while the others are still submitting.
 */
static void test_pool_helpers_stuck(void **state)
{
	(void)state;
	for (uint32_t n_workers = 2; n_workers <= MAX_WORKERS; n_workers++) {
		struct gated_caller g = {0};
		struct submitter subs[3];
		atomic_bool stop;
		uint64_t deadline;
		unsigned long jobs;

		ASSERT_OK(pool_threads_new(n_workers, &g.pool));
		atomic_init(&g.gate, false);
		atomic_init(&g.n_gated, 0);
		ASSERT_EQ(pthread_create(&g.thread, NULL, gated_caller_main, &g), 0);
		/* wait until every task of the held job has started (the caller
		 * and all the pool threads are inside it) */
		deadline = spin_now_ns() + GATE_TIMEOUT_NS;
		while (atomic_load(&g.n_gated) < n_workers && spin_now_ns() < deadline)
			sched_yield();
		ASSERT_EQ(atomic_load(&g.n_gated), n_workers);

		start_submitters(subs, 3, g.pool, arg_iters / 10, NULL, false);
		jobs = join_submitters(subs, 3);
		ASSERT_EQ(jobs, 3 * (arg_iters / 10));
		atomic_store(&g.gate, true);
		ASSERT_EQ(pthread_join(g.thread, NULL), 0);
		assert_no_errors();

		/* the gate opens in the middle of the others' jobs */
		atomic_init(&stop, false);
		atomic_store(&g.gate, false);
		atomic_store(&g.n_gated, 0);
		start_submitters(subs, 3, g.pool, 0, &stop, false);
		ASSERT_EQ(pthread_create(&g.thread, NULL, gated_caller_main, &g), 0);
		deadline = spin_now_ns() + GATE_TIMEOUT_NS;
		while (atomic_load(&g.n_gated) < n_workers && spin_now_ns() < deadline)
			sched_yield();
		usleep(20000);
		atomic_store(&g.gate, true);
		ASSERT_EQ(pthread_join(g.thread, NULL), 0);
		usleep(20000);
		atomic_store(&stop, true);
		jobs = join_submitters(subs, 3);
		g.pool = pool_free(g.pool);
		print_message("  %u workers: held job, %lu + %lu jobs beside it\n", n_workers,
		              3 * (arg_iters / 10), jobs);
		assert_no_errors();
	}
}

/* ------------------------------------------------------------ (c) pool_free */

/*
 * (c): pool_free() must stop workers whether they sleep on the condition
 * variable (idle for longer than the spin), spin right after a job, or have
 * not even started; with every shape, many times. A lost stop hangs into the
 * ctest timeout; a leak fails LeakSanitizer.
 */
static void test_pool_free_idle_and_spinning(void **state)
{
	unsigned rounds = arg_iters >= 1000 ? 200 : 20;

	(void)state;
	for (unsigned i = 0; i < rounds; i++) {
		uint32_t n_workers = 1 + i % MAX_WORKERS;
		struct pool *p = NULL;

		ASSERT_OK(pool_threads_new(n_workers, &p));
		switch (i % 3) {
		case 0: /* freed at once: threads may not have reached their loop */
			break;
		case 1: /* a job, then free while the workers still spin */
			run_job_at_depth(p, 0, 16, i, false);
			break;
		case 2: /* a job, then idle well past the spin: workers sleep */
			run_job_at_depth(p, 0, 16, i, false);
			usleep(2000);
			break;
		}
		p = pool_free(p);
		assert_null(p);
	}
	assert_null(pool_free(NULL));
	assert_no_errors();
}

/* A pool of one worker (no thread) and single-task jobs take the inline
 * path: the same stamps hold there (worker 0, the caller, once each). */
static void test_pool_inline_paths(void **state)
{
	struct pool *p = NULL;

	(void)state;
	ASSERT_OK(pool_threads_new(1, &p));
	ASSERT_EQ(pool_n_workers(p), 1);
	for (uint32_t i = 0; i < sizeof(task_counts) / sizeof(task_counts[0]); i++)
		run_job_at_depth(p, i % 3, task_counts[i], i, false);
	p = pool_free(p);
	ASSERT_ERRNO(pool_threads_new(1025, &p), EINVAL);
	assert_no_errors();
}

int main(int argc, char **argv)
{
	const char *env = getenv("MOE_STRESS_ITERS");
	const char *arg = argc > 1 ? argv[1] : env;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_pool_inline_paths, reset_errors_setup),
	    cmocka_unit_test_setup(test_pool_many_submitters, reset_errors_setup),
	    cmocka_unit_test_setup(test_pool_nodes_many_submitters, reset_errors_setup),
	    cmocka_unit_test_setup(test_pool_helpers_stuck, reset_errors_setup),
	    cmocka_unit_test_setup(test_pool_free_idle_and_spinning, reset_errors_setup),
	};

	if (arg && *arg) {
		char *end;

		errno = 0;
		arg_iters = strtoul(arg, &end, 10);
		if (errno || *end || arg_iters < 10) {
			fprintf(stderr, "usage: %s [ITERATIONS >= 10]\n", argv[0]);
			return 2;
		}
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
