/* SPDX-License-Identifier: MIT */
/*
 * test_topo: hand-built topologies over CPUs 0 and 1, for the tests of the
 * NUMA pool and of the engine on it (topology.c is not needed: only the
 * struct is filled). One node holds both CPUs; with more nodes, node i
 * holds CPU i % 2, so 4 and 8 nodes are simulated nodes sharing CPUs.
 */
#pragma once

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "numa/topology.h"

static inline void test_topo_make(struct topology *t, uint32_t n_nodes)
{
	memset(t, 0, sizeof(*t));
	t->n_nodes = n_nodes;
	t->simulated = true;
	strcpy(t->source, "test");
	for (uint32_t i = 0; i < n_nodes; i++) {
		t->nodes[i].id = i;
		CPU_ZERO(&t->nodes[i].cpus);
		if (n_nodes == 1) {
			CPU_SET(0, &t->nodes[i].cpus);
			CPU_SET(1, &t->nodes[i].cpus);
		} else {
			CPU_SET(i % 2, &t->nodes[i].cpus);
		}
		t->nodes[i].n_cpus = (uint32_t)CPU_COUNT(&t->nodes[i].cpus);
	}
}

/* The topologies above need both CPUs; a test without them exits 77. */
static inline bool test_topo_cpus_allowed(void)
{
	cpu_set_t set;

	return sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_ISSET(0, &set) &&
	       CPU_ISSET(1, &set);
}
