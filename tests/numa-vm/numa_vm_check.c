/* SPDX-License-Identifier: MIT */
/*
 * numa_vm_check: what moed assumes of a two-node NUMA machine, checked inside
 * the QEMU guest that run-vm-test.sh boots (node 0 = CPU 0, node 1 = CPU 1,
 * 512 MiB each). Statically linked: the guest holds busybox and this.
 *
 * The checks are a table of named functions, each returning NULL when it
 * holds or an error message (written into the buffer it is given). Checks of
 * moed's own code (topology detection, the expert store's objects, the
 * per-node pool) go at the end of the table, each compiled in when CMake
 * finds its module (MOE_VM_HAVE_*). Each check's name and outcome is
 * printed; the exit status is 0 when all hold, 1 otherwise.
 *
 * usage: numa_vm_check [NAME...]   (no NAME: every check)
 *
 * Page placement is read with a move_pages() status query (nodes == NULL),
 * which moves nothing and reports the node of each page.
 */
#include <errno.h>
#include <linux/magic.h>
#include <numa.h>
#include <numaif.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#ifdef MOE_VM_HAVE_TOPOLOGY
#include "numa/topology.h"
#endif
#ifdef MOE_VM_HAVE_STORE_OBJECT
#include "store/store_object.h"
#endif
#ifdef MOE_VM_HAVE_POOL
#include "pool/pool.h"
#endif

#define VM_NODES 2
#define BUF_SIZE (64UL << 20) /* 64 MiB: 16384 pages of 4 KiB */
#define MSG_SIZE 256

/* A check: NULL when it holds, else @msg filled with the reason. */
typedef const char *vm_check_fn(char *msg, size_t size);

struct vm_check {
	const char *name;
	const char *what;
	vm_check_fn *fn;
};

static const char *msgf(char *msg, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Format @fmt into @msg and return @msg (so that a check can `return msgf(...)`). */
static const char *msgf(char *msg, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, size, fmt, ap);
	va_end(ap);
	return msg;
}

/* --- Helpers -------------------------------------------------------------- */

/* An anonymous private mapping of @size bytes, not yet touched; NULL on failure. */
static void *buf_map(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* Write every page of [p, p + size) so that the kernel allocates it. */
static void buf_touch(void *p, size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	volatile char *c = p;

	for (size_t off = 0; off < size; off += page)
		c[off] = 1;
}

/*
 * Check that every page of [p, p + size) lives on @node. NULL when all do,
 * else @msg says how many pages are elsewhere and where the first one is.
 */
static const char *buf_expect_node(void *p, size_t size, int node, char *msg, size_t msg_size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	unsigned long n = size / page;
	void **pages = calloc(n, sizeof(*pages));
	int *status = calloc(n, sizeof(*status));
	const char *ret = NULL;
	unsigned long wrong = 0, first = 0;
	int first_status = 0;

	if (!pages || !status) {
		ret = msgf(msg, msg_size, "out of memory for %lu page slots", n);
		goto out_free;
	}
	for (unsigned long i = 0; i < n; i++)
		pages[i] = (char *)p + i * page;
	/* nodes == NULL: a query, nothing moves; status[i] = node or -errno */
	if (move_pages(0, n, pages, NULL, status, 0) < 0) {
		ret = msgf(msg, msg_size, "move_pages status query: %s", strerror(errno));
		goto out_free;
	}
	for (unsigned long i = 0; i < n; i++) {
		if (status[i] == node)
			continue;
		if (wrong++ == 0) {
			first = i;
			first_status = status[i];
		}
	}
	if (wrong)
		ret = msgf(msg, msg_size, "%lu of %lu pages not on node %d (page %lu: %s %d)",
		           wrong, n, node, first, first_status < 0 ? "error" : "node",
		           first_status < 0 ? -first_status : first_status);
out_free:
	free(status);
	free(pages);
	return ret;
}

/* The CPUs of @node as a cpu_set_t. 0, or -errno. */
static int node_cpus(int node, cpu_set_t *ret_set)
{
	struct bitmask *mask = numa_allocate_cpumask();
	cpu_set_t set;
	int r;

	if (!mask)
		return -ENOMEM;
	if (numa_node_to_cpus(node, mask) < 0) {
		r = -errno;
		goto out_free;
	}
	CPU_ZERO(&set);
	for (unsigned int cpu = 0; cpu < mask->size && cpu < CPU_SETSIZE; cpu++)
		if (numa_bitmask_isbitset(mask, cpu))
			CPU_SET(cpu, &set);
	r = CPU_COUNT(&set) > 0 ? 0 : -ENOENT;
	if (r == 0)
		*ret_set = set;
out_free:
	numa_free_cpumask(mask);
	return r;
}

/* A function run by run_on_node() and what it returned. */
struct on_node {
	const char *(*fn)(const void *arg, char *msg, size_t size);
	const void *arg;
	char *msg;
	size_t size;
	const char *ret;
};

static void *on_node_main(void *p)
{
	struct on_node *o = p;

	o->ret = o->fn(o->arg, o->msg, o->size);
	return NULL;
}

/*
 * Run @fn(@arg) in a new thread pinned to @cpus (pinned before it starts,
 * through its attributes; NULL: not pinned) and wait for it. Returns what
 * @fn returned, or a message in @msg when the thread cannot be made.
 */
static const char *run_on_cpus(const cpu_set_t *cpus,
                               const char *(*fn)(const void *, char *, size_t), const void *arg,
                               char *msg, size_t size)
{
	struct on_node o = {.fn = fn, .arg = arg, .msg = msg, .size = size};
	pthread_attr_t attr;
	pthread_t thread;
	int r;

	r = pthread_attr_init(&attr);
	if (r)
		return msgf(msg, size, "pthread_attr_init: %s", strerror(r));
	if (cpus)
		r = pthread_attr_setaffinity_np(&attr, sizeof(*cpus), cpus);
	if (r == 0)
		r = pthread_create(&thread, &attr, on_node_main, &o);
	pthread_attr_destroy(&attr);
	if (r)
		return msgf(msg, size, "%s thread: %s", cpus ? "pinned" : "a", strerror(r));
	pthread_join(thread, NULL);
	return o.ret;
}

/* run_on_cpus() on @node's CPUs as libnuma reports them. */
static const char *run_on_node(int node, const char *(*fn)(const void *, char *, size_t),
                               const void *arg, char *msg, size_t size)
{
	cpu_set_t cpus;
	int r;

	r = node_cpus(node, &cpus);
	if (r < 0)
		return msgf(msg, size, "CPUs of node %d: %s", node, strerror(-r));
	return run_on_cpus(&cpus, fn, arg, msg, size);
}

/* --- (a) two nodes -------------------------------------------------------- */

static const char *check_two_nodes(char *msg, size_t size)
{
	int configured;

	if (numa_available() < 0)
		return msgf(msg, size, "libnuma: NUMA is not available");
	configured = numa_num_configured_nodes();
	if (configured != VM_NODES || numa_max_node() != VM_NODES - 1)
		return msgf(msg, size, "%d nodes configured, highest node %d; expected %d nodes",
		            configured, numa_max_node(), VM_NODES);
	for (int node = 0; node < VM_NODES; node++) {
		cpu_set_t cpus;
		int r = node_cpus(node, &cpus);

		if (r < 0)
			return msgf(msg, size, "CPUs of node %d: %s", node, strerror(-r));
		if (CPU_COUNT(&cpus) != 1 || !CPU_ISSET(node, &cpus))
			return msgf(msg, size, "node %d: %d CPUs, expected CPU %d alone", node,
			            CPU_COUNT(&cpus), node);
	}
	return NULL;
}

/* --- (b) mbind ------------------------------------------------------------ */

/* Map 64 MiB, bind it to @node with MPOL_BIND, touch it, check its pages. */
static const char *bound_buffer_on(int node, char *msg, size_t size)
{
	unsigned long mask = 1UL << node;
	const char *ret;
	void *p = buf_map(BUF_SIZE);

	if (!p)
		return msgf(msg, size, "mmap %lu bytes: %s", BUF_SIZE, strerror(errno));
	if (mbind(p, BUF_SIZE, MPOL_BIND, &mask, sizeof(mask) * 8, 0) < 0) {
		ret = msgf(msg, size, "mbind to node %d: %s", node, strerror(errno));
		goto out_unmap;
	}
	buf_touch(p, BUF_SIZE);
	ret = buf_expect_node(p, BUF_SIZE, node, msg, size);
out_unmap:
	munmap(p, BUF_SIZE);
	return ret;
}

static const char *check_mbind_node1(char *msg, size_t size)
{
	return bound_buffer_on(1, msg, size);
}

static const char *check_mbind_node0(char *msg, size_t size)
{
	return bound_buffer_on(0, msg, size);
}

/* --- (c) pinned threads --------------------------------------------------- */

static const char *report_node(const void *arg, char *msg, size_t size)
{
	int want = *(const int *)arg;
	unsigned int cpu, node;

	if (getcpu(&cpu, &node) < 0)
		return msgf(msg, size, "getcpu: %s", strerror(errno));
	if ((int)node != want)
		return msgf(msg, size, "thread pinned to node %d runs on CPU %u of node %u", want,
		            cpu, node);
	return NULL;
}

static const char *check_pinned_thread(char *msg, size_t size)
{
	/* node 1 is the one that matters; node 0 shows that pinning is not a no-op */
	static const int nodes[] = {1, 0};

	for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
		const char *ret = run_on_node(nodes[i], report_node, &nodes[i], msg, size);

		if (ret)
			return ret;
	}
	return NULL;
}

/* --- (d) first touch ------------------------------------------------------ */

/*
 * In a thread on some node: set the thread's policy to @policy (MPOL_DEFAULT,
 * or MPOL_PREFERRED for node 1), map and first-touch a buffer, expect node 1.
 */
static const char *touch_expect_node1(const void *arg, char *msg, size_t size)
{
	int policy = *(const int *)arg;
	unsigned long mask = 1UL << 1;
	const char *ret;
	void *p;

	if (policy == MPOL_DEFAULT ? set_mempolicy(MPOL_DEFAULT, NULL, 0) < 0
	                           : set_mempolicy(policy, &mask, sizeof(mask) * 8) < 0)
		return msgf(msg, size, "set_mempolicy(%d): %s", policy, strerror(errno));
	p = buf_map(BUF_SIZE);
	if (!p)
		return msgf(msg, size, "mmap %lu bytes: %s", BUF_SIZE, strerror(errno));
	buf_touch(p, BUF_SIZE);
	ret = buf_expect_node(p, BUF_SIZE, 1, msg, size);
	munmap(p, BUF_SIZE);
	return ret;
}

/* Default (local) policy: first touched by a thread on node 1, so on node 1. */
static const char *check_first_touch_local(char *msg, size_t size)
{
	static const int policy = MPOL_DEFAULT;

	return run_on_node(1, touch_expect_node1, &policy, msg, size);
}

/* MPOL_PREFERRED node 1 wins over locality: touched from node 0, lands on node 1. */
static const char *check_first_touch_preferred(char *msg, size_t size)
{
	static const int policy = MPOL_PREFERRED;

	return run_on_node(0, touch_expect_node1, &policy, msg, size);
}

/* --- (e) moed's topology detection ---------------------------------------- */

#ifdef MOE_VM_HAVE_TOPOLOGY
static const char *check_topology_detect(char *msg, size_t size)
{
	struct topology *t = calloc(1, sizeof(*t));
	struct diag d = {{0}};
	const char *ret = NULL;
	int r;

	if (!t)
		return msgf(msg, size, "out of memory");
	r = topology_detect(t, &d);
	if (r < 0) {
		ret = msgf(msg, size, "topology_detect: %s: %s", strerror(-r), d.msg);
		goto out_free;
	}
	if (t->n_nodes != VM_NODES) {
		ret = msgf(msg, size, "topology_detect (%s) sees %u nodes, expected %d", t->source,
		           t->n_nodes, VM_NODES);
		goto out_free;
	}
	for (uint32_t i = 0; i < t->n_nodes; i++) {
		const struct topo_node *n = &t->nodes[i];

		if (n->id != i || n->n_cpus != 1 || CPU_COUNT(&n->cpus) != 1 ||
		    !CPU_ISSET((int)i, &n->cpus)) {
			ret = msgf(msg, size, "node %u (index %u): %u CPUs, expected CPU %u alone",
			           n->id, i, n->n_cpus, i);
			goto out_free;
		}
	}
out_free:
	free(t);
	return ret;
}
#endif

#if defined(MOE_VM_HAVE_STORE_OBJECT) || defined(MOE_VM_HAVE_POOL)
/*
 * topology_detect(), expecting the guest's two nodes: a topology to free in
 * *@ret_t, or NULL with @msg filled.
 */
static const char *topology_two_nodes(struct topology **ret_t, char *msg, size_t size)
{
	struct topology *t = calloc(1, sizeof(*t));
	struct diag d = {{0}};
	int r;

	if (!t)
		return msgf(msg, size, "out of memory");
	r = topology_detect(t, &d);
	if (r < 0 || t->n_nodes != VM_NODES || t->simulated) {
		if (r < 0)
			msgf(msg, size, "topology_detect: %s: %s", strerror(-r), d.msg);
		else
			msgf(msg, size, "topology_detect (%s) sees %u nodes, expected %d",
			     t->source, t->n_nodes, VM_NODES);
		free(t);
		return msg;
	}
	*ret_t = t;
	return NULL;
}

/* Is @cpu one of @node's CPUs in @t? */
static int topo_node_has_cpu(const struct topology *t, uint32_t node, int cpu)
{
	return cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &t->nodes[node].cpus);
}
#endif

/* --- (f) the expert store's objects ---------------------------------------- */

#ifdef MOE_VM_HAVE_STORE_OBJECT
/* tmpfs, which honours mbind() for a shared file mapping (run-vm-test.sh mounts it) */
#define STORE_DIR        "/dev/shm"
#define STORE_DATA_BYTES (16UL << 20) /* 4096 pages of 4 KiB */

/* The object to fill and the CPUs of the node whose thread fills it. */
struct store_fill {
	struct store_object *o;
	const struct topology *t;
	uint32_t fill_node; /* index into t->nodes[] */
};

/*
 * What store_fill.c's fill_thread() does before its first write, then the
 * writes: pin this thread to the node's CPUs with pthread_setaffinity_np(),
 * and write every byte of the object's data.
 */
static const char *store_fill_data(const void *arg, char *msg, size_t size)
{
	const struct store_fill *f = arg;
	const cpu_set_t *cpus = &f->t->nodes[f->fill_node].cpus;
	const struct store_header *h = store_object_header(f->o);
	int r, cpu;

	r = pthread_setaffinity_np(pthread_self(), sizeof(*cpus), cpus);
	if (r)
		return msgf(msg, size, "pinning the filling thread to node %u's CPUs: %s",
		            f->t->nodes[f->fill_node].id, strerror(r));
	cpu = sched_getcpu();
	if (!topo_node_has_cpu(f->t, f->fill_node, cpu))
		return msgf(msg, size, "the filling thread pinned to node %u runs on CPU %d",
		            f->t->nodes[f->fill_node].id, cpu);
	memset(f->o->base + h->data_offset, 0x5a, h->data_bytes);
	return NULL;
}

/*
 * store_object_create() an object of node index @node of @t in STORE_DIR,
 * fill its data from a thread on node index @fill_node's CPUs, and check
 * with store_object_pages_on_node() that every data page is on @node's
 * kernel node.
 */
static const char *store_object_fill_check(const struct topology *t, uint32_t node,
                                           uint32_t fill_node, char *msg, size_t size)
{
	static const uint8_t identity[16] = "numa_vm_check";
	struct store_object o;
	struct store_fill f = {.o = &o, .t = t, .fill_node = fill_node};
	const struct store_header *h;
	struct diag d = {{0}};
	uint64_t on[VM_NODES], pages;
	const char *ret;
	char path[256];
	int r;

	r = store_object_path(STORE_DIR, "numa_vm_check", node, path, sizeof(path));
	if (r < 0)
		return msgf(msg, size, "store_object_path: %s", strerror(-r));
	r = store_object_create(path, t, node, identity, STORE_DATA_BYTES, 0, 0, &o, &d);
	if (r < 0)
		return msgf(msg, size, "store_object_create(node %u): %s: %s", t->nodes[node].id,
		            strerror(-r), d.msg);
	ret = run_on_cpus(NULL, store_fill_data, &f, msg, size);
	if (ret)
		goto out_destroy;
	h = store_object_header(&o);
	for (uint32_t i = 0; i < VM_NODES; i++) {
		r = store_object_pages_on_node(&o, h->data_offset, h->data_bytes,
		                               (int)t->nodes[i].id, &on[i], &pages);
		if (r < 0) {
			ret = msgf(msg, size, "store_object_pages_on_node: %s", strerror(-r));
			goto out_destroy;
		}
	}
	if (on[node] != pages)
		ret = msgf(msg, size,
		           "object of node %u filled from node %u's CPUs: %llu of %llu data pages "
		           "on node %u (node %u: %llu, node %u: %llu)",
		           t->nodes[node].id, t->nodes[fill_node].id, (unsigned long long)on[node],
		           (unsigned long long)pages, t->nodes[node].id, t->nodes[0].id,
		           (unsigned long long)on[0], t->nodes[1].id, (unsigned long long)on[1]);
out_destroy:
	store_object_destroy(&o);
	return ret;
}

/* Both store checks: STORE_DIR must be tmpfs, then @node's object filled from @fill_node. */
static const char *store_object_check(uint32_t node, uint32_t fill_node, char *msg, size_t size)
{
	struct topology *t;
	struct statfs sfs;
	const char *ret;

	if (statfs(STORE_DIR, &sfs) < 0)
		return msgf(msg, size, "%s: %s", STORE_DIR, strerror(errno));
	if ((unsigned long)sfs.f_type != TMPFS_MAGIC)
		return msgf(msg, size, "%s is not tmpfs (type %#lx): mbind() would not place it",
		            STORE_DIR, (unsigned long)sfs.f_type);
	ret = topology_two_nodes(&t, msg, size);
	if (ret)
		return ret;
	ret = store_object_fill_check(t, node, fill_node, msg, size);
	free(t);
	return ret;
}

/* An expert object of node 1, filled as the store fills it: its pages on node 1. */
static const char *check_store_object_node1(char *msg, size_t size)
{
	return store_object_check(1, 1, msg, size);
}

/* An object of node 0 first touched from node 1: its binding wins, node 0. */
static const char *check_store_object_binding(char *msg, size_t size)
{
	return store_object_check(0, 1, msg, size);
}
#endif

/* --- (g) the per-node pool ------------------------------------------------- */

#ifdef MOE_VM_HAVE_POOL
/*
 * Few tasks on node 0, many on node 1, each long enough (busy, not asleep)
 * that node 0's workers run out of their own while node 1's are still
 * queued: a pool that let them steal would run some of node 1's on node 0.
 */
#define POOL_TASKS_NODE0 4u
#define POOL_TASKS_NODE1 64u
#define POOL_TASKS       (POOL_TASKS_NODE0 + POOL_TASKS_NODE1)
#define POOL_TASK_NS     200000u

struct pool_round {
	struct pool *pool;
	const struct topology *t;
	uint32_t caller_node; /* index of the node the caller is pinned to */
	int cpu[POOL_TASKS];  /* sched_getcpu() of each task, at its end; -2: not run */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pool_record_task(void *ctx, uint32_t task, uint32_t worker)
{
	struct pool_round *pr = ctx;
	uint64_t end = now_ns() + POOL_TASK_NS;

	(void)worker;
	while (now_ns() < end)
		;
	pr->cpu[task] = sched_getcpu();
}

/* In the caller's pinned thread: one run_nodes() job, then where each task ran. */
static const char *pool_round_run(const void *arg, char *msg, size_t size)
{
	/* run_on_cpus() passes arguments as const: this one is ours to write */
	struct pool_round *pr = (struct pool_round *)(uintptr_t)arg;
	static const uint32_t node_end[VM_NODES] = {POOL_TASKS_NODE0, POOL_TASKS};
	uint32_t wrong = 0, first = 0;

	for (uint32_t i = 0; i < POOL_TASKS; i++)
		pr->cpu[i] = -2;
	pool_run_nodes(pr->pool, VM_NODES, node_end, pool_record_task, pr);
	for (uint32_t i = 0; i < POOL_TASKS; i++) {
		uint32_t node = i < POOL_TASKS_NODE0 ? 0 : 1;

		if (topo_node_has_cpu(pr->t, node, pr->cpu[i]))
			continue;
		if (wrong++ == 0)
			first = i;
	}
	if (wrong) {
		uint32_t node = first < POOL_TASKS_NODE0 ? 0 : 1;

		return msgf(msg, size,
		            "caller on node %u: %u of %u tasks off their node (task %u of node %u "
		            "ran on CPU %d)",
		            pr->t->nodes[pr->caller_node].id, wrong, POOL_TASKS, first,
		            pr->t->nodes[node].id, pr->cpu[first]);
	}
	return NULL;
}

/*
 * pool_nodes_new() on the detected topology without stealing, then one
 * run_nodes() job from a caller pinned to node 0 and one from a caller
 * pinned to node 1 (the caller claims the tasks of the node it runs on).
 */
static const char *check_pool_nodes(char *msg, size_t size)
{
	struct pool_round *pr;
	struct topology *t;
	struct pool *pool = NULL;
	const char *ret;
	int r;

	ret = topology_two_nodes(&t, msg, size);
	if (ret)
		return ret;
	pr = calloc(1, sizeof(*pr));
	if (!pr) {
		ret = msgf(msg, size, "out of memory");
		goto out_topology;
	}
	r = pool_nodes_new(t, 0, false, &pool);
	if (r < 0) {
		ret = msgf(msg, size, "pool_nodes_new: %s", strerror(-r));
		goto out_round;
	}
	if (pool_n_nodes(pool) != VM_NODES) {
		ret = msgf(msg, size, "pool_nodes_new: %u nodes, expected %d", pool_n_nodes(pool),
		           VM_NODES);
		goto out_pool;
	}
	*pr = (struct pool_round){.pool = pool, .t = t};
	for (uint32_t c = 0; c < VM_NODES && !ret; c++) {
		pr->caller_node = c;
		ret = run_on_cpus(&t->nodes[c].cpus, pool_round_run, pr, msg, size);
	}
out_pool:
	pool_free(pool);
out_round:
	free(pr);
out_topology:
	free(t);
	return ret;
}
#endif

/* --- The table ------------------------------------------------------------ */

static const struct vm_check checks[] = {
	{"two_nodes", "the machine has 2 NUMA nodes, CPU 0 on node 0, CPU 1 on node 1",
	 check_two_nodes},
	{"mbind_node1", "64 MiB bound to node 1 (MPOL_BIND) and touched: every page on node 1",
	 check_mbind_node1},
	{"mbind_node0", "64 MiB bound to node 0 and touched: every page stays on node 0",
	 check_mbind_node0},
	{"pinned_thread", "a thread pinned to a node's CPUs runs on that node (getcpu)",
	 check_pinned_thread},
	{"first_touch_local", "first touch by a thread on node 1, default policy: node 1",
	 check_first_touch_local},
	{"first_touch_preferred", "first touch from node 0 under MPOL_PREFERRED node 1: node 1",
	 check_first_touch_preferred},
#ifdef MOE_VM_HAVE_TOPOLOGY
	{"topology_detect", "topology_detect sees 2 nodes with CPUs {0} and {1}",
	 check_topology_detect},
#endif
#ifdef MOE_VM_HAVE_STORE_OBJECT
	{"store_object_node1",
	 "store object of node 1 in " STORE_DIR ", data written by a thread on node 1: every "
	 "data page on node 1",
	 check_store_object_node1},
	{"store_object_binding",
	 "store object of node 0, data written by a thread on node 1: every data page on node 0 "
	 "(mbind beats first touch)",
	 check_store_object_binding},
#endif
#ifdef MOE_VM_HAVE_POOL
	{"pool_nodes",
	 "pool_nodes_new (no stealing), run_nodes from a caller on each node: node 1's tasks "
	 "ran on node 1's CPUs, node 0's on node 0's",
	 check_pool_nodes},
#endif
	/*
	 * Checks of moed's own code are compiled in when CMake finds their
	 * module: (e) MOE_VM_HAVE_TOPOLOGY, (f) MOE_VM_HAVE_STORE_OBJECT (which
	 * also needs libxxhash.a), (g) MOE_VM_HAVE_POOL.
	 */
};

static int selected(const char *name, int argc, char **argv)
{
	if (argc < 2)
		return 1;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	size_t n = sizeof(checks) / sizeof(checks[0]);
	unsigned int run = 0, failed = 0;

	/* the guest's console: keep lines in order with the init's own output */
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < n; i++) {
		char msg[MSG_SIZE];
		const char *err;

		if (!selected(checks[i].name, argc, argv))
			continue;
		run++;
		err = checks[i].fn(msg, sizeof(msg));
		if (err) {
			failed++;
			printf("check %-22s FAIL: %s\n", checks[i].name, err);
			printf("      (%s)\n", checks[i].what);
		} else {
			printf("check %-22s ok: %s\n", checks[i].name, checks[i].what);
		}
	}
	if (run == 0) {
		fprintf(stderr, "numa_vm_check: no check of that name\n");
		return 2;
	}
	printf("numa_vm_check: %u of %u checks passed\n", run - failed, run);
	return failed ? 1 : 0;
}
