/* SPDX-License-Identifier: MIT */
/*
 * topology: the NUMA nodes moed may use, each with the CPUs this process may
 * run on (the node's CPUs intersected with sched_getaffinity(), so cgroup
 * cpusets and taskset count) and its memory.
 *
 * Two sources:
 * - detected: libnuma. A kernel or machine without NUMA is one node (node 0)
 *   holding every allowed CPU. Nodes with memory but no allowed CPU (CXL
 *   expanders, a cpuset that excludes them) cannot compute and are left out.
 * - a file (setting `topology_file`), so that placement, replicas and
 *   migration can be tested as if on machines of 2, 4 or 8 nodes:
 *
 *       # comment
 *       node 0 cpus 0-1 mem 8G
 *       node 1 cpus 1
 *
 *   one line per node, ids distinct, `cpus` a list such as 0-3,6 (CPUs may
 *   repeat across nodes; each must be one this process may use), `mem`
 *   optional (bytes, with an optional K, M, G or T suffix). A topology from a
 *   file is `simulated`: moed then places memory logically only and makes no
 *   memory-policy call for its nodes, which may not exist.
 *
 * Thread-safety: immutable once built.
 */
#pragma once

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/diag.h"

#define TOPOLOGY_MAX_NODES 64

struct topo_node {
	uint32_t id;         /* the kernel's node number (or the file's) */
	cpu_set_t cpus;      /* the node's CPUs this process may use, never empty */
	uint32_t n_cpus;
	uint64_t mem_total;  /* bytes; 0 when unknown */
	uint64_t mem_free;   /* bytes at detection; 0 when unknown */
};

struct topology {
	uint32_t n_nodes;            /* >= 1 */
	struct topo_node nodes[TOPOLOGY_MAX_NODES]; /* in ascending id order */
	bool simulated;              /* from a file: no memory-policy calls */
	char source[64];             /* "libnuma", "no NUMA", "file" */
};

/*
 * Detect the machine's topology. 0, or -errno with @d filled (-ENODEV when
 * libnuma reports no node holding an allowed CPU); @t is untouched on failure.
 */
int topology_detect(struct topology *t, struct diag *d);

/*
 * The topology of a machine without NUMA: node 0 holding every allowed CPU,
 * with the memory sysinfo() reports; source "no NUMA". topology_detect()
 * falls back to it when numa_available() < 0; public so that tests can reach
 * that path on a NUMA machine too.
 */
int topology_detect_flat(struct topology *t, struct diag *d);

/* Read a topology file (format above). 0 or -errno/-EINVAL with file:line in @d. */
int topology_load(const char *path, struct topology *t, struct diag *d);

/* Parse the text of a topology file; @label names it in messages. */
int topology_parse(const char *text, const char *label, struct topology *t, struct diag *d);

/* The index (into nodes[]) of the node whose id is @id, or -ENOENT. */
int topology_node_index(const struct topology *t, uint32_t id);

/*
 * The index of the first node that holds @cpu, or -ENOENT. With overlapping
 * simulated nodes, the first one in id order.
 */
int topology_node_of_cpu(const struct topology *t, int cpu);

/* Total allowed CPUs over all nodes, each CPU counted once. */
uint32_t topology_n_cpus(const struct topology *t);
