/* SPDX-License-Identifier: MIT */
/*
 * topology: detection through libnuma (or one flat node without it) and the
 * lookups every topology answers. The file format lives in topology_file.c.
 *
 * libnuma calls used here return errors rather than exit, except that its
 * bitmask allocator exits when malloc fails; the one mask that matters most
 * (a node's CPUs, sized by the kernel's possible CPUs) is therefore ours.
 */
#include "numa/topology.h"

#include <errno.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

static int allowed_cpus(cpu_set_t *ret, struct diag *d)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return diag_set(d, -errno, "sched_getaffinity: %s", strerror(errno));
	if (CPU_COUNT(&set) == 0)
		return diag_set(d, -ENODEV, "sched_getaffinity: no CPU allowed");
	*ret = set;
	return 0;
}

static void node_set_cpus(struct topo_node *n, const cpu_set_t *cpus)
{
	n->cpus = *cpus;
	n->n_cpus = (uint32_t)CPU_COUNT(cpus);
}

int topology_detect_flat(struct topology *t, struct diag *d)
{
	struct topology flat;
	struct sysinfo si;
	cpu_set_t cpus;
	int r;

	r = allowed_cpus(&cpus, d);
	if (r < 0)
		return r;
	memset(&flat, 0, sizeof(flat));
	flat.n_nodes = 1;
	node_set_cpus(&flat.nodes[0], &cpus);
	/* memory is a hint for placement: unknown (0) rather than a failure */
	if (sysinfo(&si) == 0) {
		flat.nodes[0].mem_total = (uint64_t)si.totalram * si.mem_unit;
		flat.nodes[0].mem_free = (uint64_t)si.freeram * si.mem_unit;
	}
	snprintf(flat.source, sizeof(flat.source), "no NUMA");
	*t = flat;
	return 0;
}

/*
 * A CPU mask for numa_node_to_cpus(): at least as many bits as the kernel
 * has possible CPUs (libnuma refuses smaller buffers with ERANGE) and at
 * least CPU_SETSIZE, the most a cpu_set_t can compare against.
 */
static int cpumask_new(struct bitmask *ret)
{
	const size_t word_bits = 8 * sizeof(unsigned long);
	int possible = numa_num_possible_cpus();
	size_t bits = possible > CPU_SETSIZE ? (size_t)possible : CPU_SETSIZE;
	unsigned long *words;

	bits = (bits + word_bits - 1) / word_bits * word_bits;
	words = calloc(bits / word_bits, sizeof(*words));
	if (!words)
		return -ENOMEM;
	ret->size = bits;
	ret->maskp = words;
	return 0;
}

/* The CPUs of kernel node @node that @allowed holds. */
static int numa_node_allowed_cpus(int node, struct bitmask *mask, const cpu_set_t *allowed,
				  cpu_set_t *ret, struct diag *d)
{
	cpu_set_t set;

	if (numa_node_to_cpus(node, mask) < 0)
		return diag_set(d, -errno, "libnuma: CPUs of node %d: %s", node, strerror(errno));
	CPU_ZERO(&set);
	for (unsigned cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (numa_bitmask_isbitset(mask, cpu) && CPU_ISSET(cpu, allowed))
			CPU_SET(cpu, &set);
	*ret = set;
	return 0;
}

/*
 * Nodes in mems_allowed only: besides honouring the cpuset's memory side,
 * this keeps out ids up to numa_max_node() that do not exist, for which
 * numa_node_to_cpus() would answer "every CPU". A memoryless node (CPUs, no
 * memory) is never in mems_allowed and is left out with its CPUs.
 */
static int detect_numa_nodes(struct topology *t, const cpu_set_t *allowed, struct diag *d)
{
	struct bitmask cpumask, *mems = NULL;
	int max_node = numa_max_node(), r;

	r = cpumask_new(&cpumask);
	if (r < 0)
		return diag_set(d, r, "libnuma: out of memory for a CPU mask");
	mems = numa_get_mems_allowed();
	for (int node = 0; node <= max_node; node++) {
		struct topo_node *n = &t->nodes[t->n_nodes];
		cpu_set_t cpus;
		long long size, free_bytes = 0;

		if (!numa_bitmask_isbitset(mems, (unsigned)node))
			continue;
		r = numa_node_allowed_cpus(node, &cpumask, allowed, &cpus, d);
		if (r < 0)
			goto out_free_masks;
		if (CPU_COUNT(&cpus) == 0)
			continue; /* memory only (CXL, excluded by the cpuset): cannot compute */
		if (t->n_nodes == TOPOLOGY_MAX_NODES) {
			r = diag_set(d, -E2BIG, "libnuma: more than %d nodes with allowed CPUs",
				     TOPOLOGY_MAX_NODES);
			goto out_free_masks;
		}
		n->id = (uint32_t)node;
		node_set_cpus(n, &cpus);
		size = numa_node_size64(node, &free_bytes);
		n->mem_total = size > 0 ? (uint64_t)size : 0;
		n->mem_free = size > 0 && free_bytes > 0 ? (uint64_t)free_bytes : 0;
		t->n_nodes++;
	}
	r = 0;
	if (t->n_nodes == 0)
		r = diag_set(d, -ENODEV, "libnuma: no node holds a CPU this process may use");
out_free_masks:
	numa_bitmask_free(mems);
	free(cpumask.maskp);
	return r;
}

int topology_detect(struct topology *t, struct diag *d)
{
	struct topology *found;
	cpu_set_t allowed;
	int r;

	if (numa_available() < 0)
		return topology_detect_flat(t, d);
	r = allowed_cpus(&allowed, d);
	if (r < 0)
		return r;
	/* ~10 KiB: built on the heap, copied out only on success */
	found = calloc(1, sizeof(*found));
	if (!found)
		return diag_set(d, -ENOMEM, "topology: out of memory");
	r = detect_numa_nodes(found, &allowed, d);
	if (r == 0) {
		snprintf(found->source, sizeof(found->source), "libnuma");
		*t = *found;
	}
	free(found);
	return r;
}

int topology_node_index(const struct topology *t, uint32_t id)
{
	for (uint32_t i = 0; i < t->n_nodes; i++)
		if (t->nodes[i].id == id)
			return (int)i;
	return -ENOENT;
}

int topology_node_of_cpu(const struct topology *t, int cpu)
{
	/* CPU_ISSET past the set is out of bounds */
	if (cpu < 0 || cpu >= CPU_SETSIZE)
		return -ENOENT;
	for (uint32_t i = 0; i < t->n_nodes; i++)
		if (CPU_ISSET(cpu, &t->nodes[i].cpus))
			return (int)i;
	return -ENOENT;
}

uint32_t topology_n_cpus(const struct topology *t)
{
	cpu_set_t all;

	CPU_ZERO(&all);
	for (uint32_t i = 0; i < t->n_nodes; i++)
		CPU_OR(&all, &all, &t->nodes[i].cpus);
	return (uint32_t)CPU_COUNT(&all);
}
