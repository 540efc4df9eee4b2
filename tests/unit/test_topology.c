/* SPDX-License-Identifier: MIT */
/*
 * Tests of the NUMA topology: detection on this machine (and with a narrower
 * affinity set, which must narrow the nodes' CPUs), the flat no-NUMA
 * fallback, topology files (good ones, simulated 2/4/8-node machines that
 * reuse CPUs, and every error path with its message), and the lookups.
 *
 * The CPUs written into test files are the ones this process may use
 * ("$" and "%" below stand for the first and second allowed CPU), so the
 * tests hold under taskset or a cgroup cpuset as well.
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

#include "numa/topology.h"

static cpu_set_t orig_affinity;
static int cpu_a, cpu_b; /* the first two allowed CPUs (cpu_b == cpu_a with one) */

/* ---------------------------------------------------------------- helpers */

static void affinity_read(cpu_set_t *set)
{
	CPU_ZERO(set);
	assert_int_equal(sched_getaffinity(0, sizeof(*set), set), 0);
}

/* Teardown of every test that narrows the affinity: runs even when it fails. */
static int affinity_restore(void **state)
{
	(void)state;
	return sched_setaffinity(0, sizeof(orig_affinity), &orig_affinity);
}

static void cpuset_assert_equal(const cpu_set_t *a, const cpu_set_t *b)
{
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (!CPU_ISSET(cpu, a) != !CPU_ISSET(cpu, b))
			fail_msg("cpu %d: %d in one set, %d in the other", cpu,
				 CPU_ISSET(cpu, a) != 0, CPU_ISSET(cpu, b) != 0);
}

/* @tmpl with "$" replaced by cpu_a and "%" by cpu_b. */
static void subst(const char *tmpl, char *out, size_t size)
{
	size_t n = 0;

	for (const char *p = tmpl; *p && n + 12 < size; p++) {
		if (*p == '$' || *p == '%')
			n += (size_t)snprintf(out + n, size - n, "%d", *p == '$' ? cpu_a : cpu_b);
		else
			out[n++] = *p;
	}
	out[n] = '\0';
}

static int parse_tmpl(const char *tmpl, struct topology *t, struct diag *d)
{
	char text[4096];

	subst(tmpl, text, sizeof(text));
	diag_clear(d);
	return topology_parse(text, "topo", t, d);
}

/* "node 0 cpus A\nnode 1 cpus B\n..." alternating the two allowed CPUs. */
static void alternating_text(uint32_t n_nodes, char *out, size_t size)
{
	size_t n = 0;

	for (uint32_t i = 0; i < n_nodes; i++)
		n += (size_t)snprintf(out + n, size - n, "node %u cpus %d mem %uG\n", i,
				      i % 2 ? cpu_b : cpu_a, i + 1);
}

/* ---------------------------------------------------------------- detection */

static void test_detect_this_machine(void **state)
{
	struct topology t;
	struct diag d = { 0 };
	cpu_set_t allowed;

	(void)state;
	affinity_read(&allowed);
	ASSERT_OK(topology_detect(&t, &d));
	/* the machine the tests run on: one node (a NUMA box would need its own test) */
	ASSERT_EQ(t.n_nodes, 1);
	ASSERT_EQ(t.nodes[0].id, 0);
	assert_false(t.simulated);
	assert_true(strcmp(t.source, "libnuma") == 0 || strcmp(t.source, "no NUMA") == 0);
	cpuset_assert_equal(&t.nodes[0].cpus, &allowed);
	ASSERT_EQ(t.nodes[0].n_cpus, CPU_COUNT(&allowed));
	ASSERT_EQ(topology_n_cpus(&t), CPU_COUNT(&allowed));
	assert_true(t.nodes[0].mem_total > 0);
	assert_true(t.nodes[0].mem_free <= t.nodes[0].mem_total);
	ASSERT_EQ(topology_node_of_cpu(&t, cpu_a), 0);
}

static void test_detect_restricted_affinity(void **state)
{
	struct topology t;
	struct diag d = { 0 };
	cpu_set_t one;

	(void)state;
	if (cpu_b == cpu_a)
		skip(); /* one allowed CPU: nothing to narrow */
	CPU_ZERO(&one);
	CPU_SET(cpu_b, &one);
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
	ASSERT_OK(topology_detect(&t, &d));
	ASSERT_EQ(t.n_nodes, 1);
	cpuset_assert_equal(&t.nodes[0].cpus, &one);
	ASSERT_EQ(t.nodes[0].n_cpus, 1);
	ASSERT_EQ(topology_n_cpus(&t), 1);
	ASSERT_ERRNO(topology_node_of_cpu(&t, cpu_a), ENOENT);
	ASSERT_EQ(topology_node_of_cpu(&t, cpu_b), 0);

	/* the flat fallback narrows the same way */
	ASSERT_OK(topology_detect_flat(&t, &d));
	cpuset_assert_equal(&t.nodes[0].cpus, &one);

	/* and widens again with the affinity */
	ASSERT_OK(affinity_restore(NULL));
	ASSERT_OK(topology_detect(&t, &d));
	cpuset_assert_equal(&t.nodes[0].cpus, &orig_affinity);
}

static void test_detect_flat(void **state)
{
	struct topology t;
	struct diag d = { 0 };

	(void)state;
	memset(&t, 0xa5, sizeof(t));
	ASSERT_OK(topology_detect_flat(&t, &d));
	ASSERT_EQ(t.n_nodes, 1);
	ASSERT_EQ(t.nodes[0].id, 0);
	assert_false(t.simulated);
	assert_string_equal(t.source, "no NUMA");
	cpuset_assert_equal(&t.nodes[0].cpus, &orig_affinity);
	ASSERT_EQ(t.nodes[0].n_cpus, CPU_COUNT(&orig_affinity));
	assert_true(t.nodes[0].mem_total > 0);
}

/* ---------------------------------------------------------------- files */

static void test_parse_good(void **state)
{
	static const char tmpl[] = "# two nodes, written out of order\n"
				   "\n"
				   "node 7 cpus %,$ mem 2K   # trailing comment\r\n"
				   "  node 3\tmem 3M cpus $-$\n"
				   "node 5 cpus $ mem 5\n"
				   "node 9 cpus $ mem 1G\n"
				   "node 11 cpus $ mem 2T";
	struct topology t;
	struct diag d = { 0 };
	cpu_set_t ab, a;

	(void)state;
	ASSERT_OK(parse_tmpl(tmpl, &t, &d));
	assert_true(t.simulated);
	assert_string_equal(t.source, "file");
	ASSERT_EQ(t.n_nodes, 5);
	/* sorted by id */
	ASSERT_EQ(t.nodes[0].id, 3);
	ASSERT_EQ(t.nodes[1].id, 5);
	ASSERT_EQ(t.nodes[2].id, 7);
	ASSERT_EQ(t.nodes[3].id, 9);
	ASSERT_EQ(t.nodes[4].id, 11);
	ASSERT_EQ(t.nodes[0].mem_total, 3ull << 20);
	ASSERT_EQ(t.nodes[1].mem_total, 5);
	ASSERT_EQ(t.nodes[2].mem_total, 2048);
	ASSERT_EQ(t.nodes[3].mem_total, 1ull << 30);
	ASSERT_EQ(t.nodes[4].mem_total, 2ull << 40);
	ASSERT_EQ(t.nodes[0].mem_free, 0);
	CPU_ZERO(&ab);
	CPU_SET(cpu_a, &ab);
	CPU_SET(cpu_b, &ab);
	CPU_ZERO(&a);
	CPU_SET(cpu_a, &a);
	cpuset_assert_equal(&t.nodes[2].cpus, &ab);
	ASSERT_EQ(t.nodes[2].n_cpus, CPU_COUNT(&ab));
	cpuset_assert_equal(&t.nodes[0].cpus, &a);
	ASSERT_EQ(t.nodes[0].n_cpus, 1);
	ASSERT_EQ(topology_node_index(&t, 7), 2);
	ASSERT_EQ(topology_node_index(&t, 11), 4);
	ASSERT_ERRNO(topology_node_index(&t, 4), ENOENT);
	/* the first node in id order holding the CPU */
	ASSERT_EQ(topology_node_of_cpu(&t, cpu_a), 0);
	ASSERT_EQ(topology_node_of_cpu(&t, cpu_b), cpu_b == cpu_a ? 0 : 2);
	ASSERT_ERRNO(topology_node_of_cpu(&t, -1), ENOENT);
	ASSERT_ERRNO(topology_node_of_cpu(&t, CPU_SETSIZE), ENOENT);
	ASSERT_ERRNO(topology_node_of_cpu(&t, 1 << 30), ENOENT);
	/* each CPU once */
	ASSERT_EQ(topology_n_cpus(&t), CPU_COUNT(&ab));
}

static void simulated_check(uint32_t n_nodes)
{
	struct topology t;
	struct diag d = { 0 };
	char text[8192];

	alternating_text(n_nodes, text, sizeof(text));
	ASSERT_OK(topology_parse(text, "sim", &t, &d));
	ASSERT_EQ(t.n_nodes, n_nodes);
	assert_true(t.simulated);
	for (uint32_t i = 0; i < n_nodes; i++) {
		ASSERT_EQ(t.nodes[i].id, i);
		ASSERT_EQ(t.nodes[i].n_cpus, 1);
		assert_true(CPU_ISSET(i % 2 ? cpu_b : cpu_a, &t.nodes[i].cpus));
		ASSERT_EQ(t.nodes[i].mem_total, (uint64_t)(i + 1) << 30);
		ASSERT_EQ(topology_node_index(&t, i), i);
	}
	ASSERT_EQ(topology_n_cpus(&t), cpu_a == cpu_b ? 1 : 2);
	ASSERT_EQ(topology_node_of_cpu(&t, cpu_a), 0);
	ASSERT_EQ(topology_node_of_cpu(&t, cpu_b), cpu_a == cpu_b ? 0 : 1);
}

static void test_parse_simulated_2_4_8(void **state)
{
	(void)state;
	simulated_check(2);
	simulated_check(4);
	simulated_check(8);
}

static void test_parse_max_nodes(void **state)
{
	struct topology t;
	struct diag d = { 0 };
	char text[8192];

	(void)state;
	alternating_text(TOPOLOGY_MAX_NODES, text, sizeof(text));
	ASSERT_OK(topology_parse(text, "max", &t, &d));
	ASSERT_EQ(t.n_nodes, TOPOLOGY_MAX_NODES);
	ASSERT_EQ(t.nodes[TOPOLOGY_MAX_NODES - 1].id, TOPOLOGY_MAX_NODES - 1);

	alternating_text(TOPOLOGY_MAX_NODES + 1, text, sizeof(text));
	memset(&t, 0x5a, sizeof(t));
	ASSERT_ERRNO(topology_parse(text, "max", &t, &d), EINVAL);
	assert_non_null(strstr(d.msg, "max:65: more than 64 nodes"));
	/* untouched on failure */
	ASSERT_EQ(t.n_nodes, 0x5a5a5a5a);
}

struct bad_case {
	const char *text; /* "$": the first allowed CPU */
	const char *msg;  /* a part of the message */
};

static void test_parse_errors(void **state)
{
	static const struct bad_case cases[] = {
	    {"", "topo: no nodes" },
	    {"# nothing\n\n   \n", "topo: no nodes" },
	    {"nod 0 cpus $", "topo:1: unknown word 'nod' (expected 'node')" },
	    {"cpus $", "topo:1: unknown word 'cpus'" },
	    {"node", "topo:1: expected 'node ID'" },
	    {"node x cpus $", "topo:1: expected 'node ID' with ID a number, got 'x'" },
	    {"node -1 cpus $", "got '-1'" },
	    {"node 99999999999 cpus $", "got '99999999999'" },
	    {"node 0 cpus $ foo 1", "topo:1: node 0: unknown word 'foo'" },
	    {"node 0 cpus $\n# c\nnode 0 cpus $", "topo:3: node 0 defined twice (first at line 1)" },
	    {"node 0", "topo:1: node 0: no cpus" },
	    {"node 0 mem 1G", "topo:1: node 0: no cpus" },
	    {"node 0 cpus", "topo:1: node 0: cpus without a value" },
	    {"node 0 cpus $ mem", "topo:1: node 0: mem without a value" },
	    {"node 0 cpus $ cpus $", "topo:1: node 0: cpus given twice" },
	    {"node 0 cpus $ mem 1 mem 2", "topo:1: node 0: mem given twice" },
	    {"node 0 cpus ,", "topo:1: node 0: bad cpu list ','" },
	    {"node 0 cpus $,", "bad cpu list" },
	    {"node 0 cpus ,$", "bad cpu list" },
	    {"node 0 cpus $,,$", "bad cpu list" },
	    {"node 0 cpus $-", "bad cpu list" },
	    {"node 0 cpus -$", "bad cpu list" },
	    {"node 0 cpus 1-0", "bad cpu list '1-0'" },
	    {"node 0 cpus a", "bad cpu list 'a'" },
	    {"node 0 cpus $x", "bad cpu list" },
	    {"node 0 cpus 0-99999999999", "bad cpu list" },
	    {"node 0 cpus 5000", "topo:1: node 0: cpu 5000 beyond CPU_SETSIZE (1024)" },
	    {"node 0 cpus 0-4294967295", "cpu 4294967295 beyond CPU_SETSIZE" },
	    {"node 0 cpus $ mem 8X", "topo:1: node 0: bad mem '8X'" },
	    {"node 0 cpus $ mem 8GB", "bad mem '8GB'" },
	    {"node 0 cpus $ mem 8g", "bad mem '8g'" },
	    {"node 0 cpus $ mem G", "bad mem 'G'" },
	    {"node 0 cpus $ mem 8G5", "bad mem '8G5'" },
	    {"node 0 cpus $ mem -1", "bad mem '-1'" },
	    {"node 0 cpus $ mem 1.5G", "bad mem '1.5G'" },
	    {"node 0 cpus $ mem 99999999999999999999", "bad mem" },
	    {"node 0 cpus $ mem 16777216T", "bad mem '16777216T'" },
	    {"node 0 cpus $\nnode 1 cpus $ mem 1K\nnode 2 bad", "topo:3: node 2: unknown word" },
	};
	struct topology t;
	struct diag d;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = parse_tmpl(cases[i].text, &t, &d);

		if (r != -EINVAL || !strstr(d.msg, cases[i].msg))
			fail_msg("case %zu '%s': r %d, message '%s', expected -EINVAL and '%s'", i,
				 cases[i].text, r, d.msg, cases[i].msg);
	}
}

static void test_parse_limits(void **state)
{
	struct topology t;
	struct diag d = { 0 };
	char text[2048];

	(void)state;
	/* the largest size that fits, and a range that covers one CPU */
	ASSERT_OK(parse_tmpl("node 0 cpus $-$ mem 16777215T", &t, &d));
	ASSERT_EQ(t.nodes[0].mem_total, 16777215ull << 40);
	ASSERT_OK(parse_tmpl("node 4294967295 cpus $ mem 18446744073709551615", &t, &d));
	ASSERT_EQ(t.nodes[0].id, UINT32_MAX);
	ASSERT_EQ(t.nodes[0].mem_total, UINT64_MAX);

	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	memcpy(text, "# ", 2);
	diag_clear(&d);
	ASSERT_ERRNO(topology_parse(text, "long", &t, &d), EINVAL);
	assert_non_null(strstr(d.msg, "long:1: line too long"));
}

/* A CPU outside the affinity set is refused, and named. */
static void test_parse_cpu_not_allowed(void **state)
{
	struct topology t;
	struct diag d = { 0 };
	char expect[128];
	cpu_set_t one;
	int outside = -1;

	(void)state;
	for (int cpu = CPU_SETSIZE - 1; cpu >= 0 && outside < 0; cpu--)
		if (!CPU_ISSET(cpu, &orig_affinity))
			outside = cpu;
	if (outside >= 0) {
		char text[64];

		snprintf(text, sizeof(text), "node 0 cpus $\nnode 1 cpus $,%d", outside);
		ASSERT_ERRNO(parse_tmpl(text, &t, &d), EINVAL);
		snprintf(expect, sizeof(expect),
			 "topo:2: node 1: cpu %d is not one this process may use", outside);
		assert_non_null(strstr(d.msg, expect));
	}
	if (cpu_a == cpu_b) {
		/* skip() fails under CI=true (test_assert.h) */
		print_message("one allowed CPU: the narrowed-affinity half skipped\n");
		skip();
	}
	/* narrowed to cpu_a: a file naming cpu_b no longer loads */
	CPU_ZERO(&one);
	CPU_SET(cpu_a, &one);
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
	ASSERT_ERRNO(parse_tmpl("node 0 cpus $-%", &t, &d), EINVAL);
	snprintf(expect, sizeof(expect), "node 0: cpu %d is not one this process may use", cpu_b);
	assert_non_null(strstr(d.msg, expect));
	ASSERT_OK(parse_tmpl("node 0 cpus $", &t, &d));
}

static void test_load_file(void **state)
{
	char path[] = "/tmp/test_topology.XXXXXX", text[256];
	struct topology t;
	struct diag d = { 0 };
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	subst("node 1 cpus %\nnode 0 cpus $ mem 4G\n", text, sizeof(text));
	assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
	close(fd);
	ASSERT_OK(topology_load(path, &t, &d));
	ASSERT_EQ(t.n_nodes, 2);
	ASSERT_EQ(t.nodes[0].id, 0);
	ASSERT_EQ(t.nodes[0].mem_total, 4ull << 30);
	assert_true(t.simulated);

	/* errors carry the path as their label */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "node 0 cpus\n", 12), 12);
	close(fd);
	ASSERT_ERRNO(topology_load(path, &t, &d), EINVAL);
	assert_non_null(strstr(d.msg, path));
	assert_non_null(strstr(d.msg, ":1: node 0: cpus without a value"));

	/* a NUL byte is not text */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "node 0\0", 7), 7);
	close(fd);
	diag_clear(&d);
	ASSERT_ERRNO(topology_load(path, &t, &d), EINVAL);
	assert_non_null(strstr(d.msg, "NUL byte"));
	unlink(path);

	diag_clear(&d);
	ASSERT_ERRNO(topology_load(path, &t, &d), ENOENT);
	assert_non_null(strstr(d.msg, path));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_detect_this_machine),
	    cmocka_unit_test_teardown(test_detect_restricted_affinity, affinity_restore),
	    cmocka_unit_test(test_detect_flat),
	    cmocka_unit_test(test_parse_good),
	    cmocka_unit_test(test_parse_simulated_2_4_8),
	    cmocka_unit_test(test_parse_max_nodes),
	    cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_parse_limits),
	    cmocka_unit_test_teardown(test_parse_cpu_not_allowed, affinity_restore),
	    cmocka_unit_test(test_load_file),
	};

	if (sched_getaffinity(0, sizeof(orig_affinity), &orig_affinity) < 0) {
		perror("sched_getaffinity");
		return 1;
	}
	cpu_a = cpu_b = -1;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &orig_affinity))
			continue;
		if (cpu_a < 0)
			cpu_a = cpu;
		else if (cpu_b < 0)
			cpu_b = cpu;
	}
	if (cpu_b < 0)
		cpu_b = cpu_a;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
