/* SPDX-License-Identifier: MIT */
/*
 * topology_file: the text format of a simulated topology (see topology.h),
 * read strictly: every mistake is an -EINVAL naming "label:line", since a
 * topology that silently differs from what was written would make the
 * placement tests it exists for pass or fail for the wrong reason.
 */
#include "numa/topology.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/parse.h"

/* Longer lines are not topology lines; the file as a whole is small too. */
#define TOPOLOGY_LINE_MAX 1024
#define TOPOLOGY_FILE_MAX (1 << 20)

struct topo_reader {
	const char *label;
	unsigned line;
	cpu_set_t allowed;                       /* sched_getaffinity() */
	unsigned first_line[TOPOLOGY_MAX_NODES]; /* where each node was defined */
	struct topology t;
	struct diag *d;
};

struct cpu_list_ctx {
	struct topo_reader *rd;
	const struct topo_node *node;
	cpu_set_t set;
};

static int cpu_range_add(uint32_t lo, uint32_t hi, void *ctx_)
{
	struct cpu_list_ctx *ctx = ctx_;
	struct topo_reader *rd = ctx->rd;

	if (hi >= CPU_SETSIZE)
		return diag_set(rd->d, -EINVAL, "%s:%u: node %u: cpu %u beyond CPU_SETSIZE (%d)",
				rd->label, rd->line, ctx->node->id, hi, CPU_SETSIZE);
	for (uint32_t cpu = lo; cpu <= hi; cpu++) {
		if (!CPU_ISSET(cpu, &rd->allowed))
			return diag_set(rd->d, -EINVAL,
					"%s:%u: node %u: cpu %u is not one this process may use "
					"(sched_getaffinity)",
					rd->label, rd->line, ctx->node->id, cpu);
		CPU_SET(cpu, &ctx->set);
	}
	return 0;
}

static int node_cpus_parse(struct topo_reader *rd, struct topo_node *n, const char *value)
{
	struct cpu_list_ctx ctx = { .rd = rd, .node = n };
	int r;

	CPU_ZERO(&ctx.set);
	r = parse_id_list(value, strlen(value), cpu_range_add, &ctx);
	if (r < 0)
		/* keeps the precise message of cpu_range_add() when it set one */
		return diag_set(rd->d, -EINVAL,
				"%s:%u: node %u: bad cpu list '%s' (expected a list such as 0-3,6)",
				rd->label, rd->line, n->id, value);
	n->cpus = ctx.set;
	n->n_cpus = (uint32_t)CPU_COUNT(&ctx.set);
	return 0;
}

static int node_mem_parse(struct topo_reader *rd, struct topo_node *n, const char *value)
{
	if (parse_size(value, &n->mem_total) < 0)
		return diag_set(rd->d, -EINVAL,
				"%s:%u: node %u: bad mem '%s' (bytes with an optional K, M, G or T "
				"suffix)",
				rd->label, rd->line, n->id, value);
	return 0;
}

/* "node ID": the id, distinct from every earlier node's. */
static int node_id_parse(struct topo_reader *rd, char **save, struct topo_node *n)
{
	const char *word = strtok_r(NULL, " \t", save);
	uint32_t id;
	int prev;

	if (!word || parse_u32(word, 0, UINT32_MAX, &id) < 0)
		return diag_set(rd->d, -EINVAL,
				"%s:%u: expected 'node ID' with ID a number, got '%s'", rd->label,
				rd->line, word ? word : "");
	prev = topology_node_index(&rd->t, id);
	if (prev >= 0)
		return diag_set(rd->d, -EINVAL, "%s:%u: node %u defined twice (first at line %u)",
				rd->label, rd->line, id, rd->first_line[prev]);
	if (rd->t.n_nodes == TOPOLOGY_MAX_NODES)
		return diag_set(rd->d, -EINVAL, "%s:%u: more than %d nodes", rd->label, rd->line,
				TOPOLOGY_MAX_NODES);
	n->id = id;
	return 0;
}

/* One line without its comment: "node ID cpus LIST [mem SIZE]", or blank. */
static int line_parse(struct topo_reader *rd, char *line)
{
	struct topo_node n = { 0 };
	bool have_cpus = false, have_mem = false;
	char *save = NULL, *word;
	int r;

	word = strtok_r(line, " \t", &save);
	if (!word)
		return 0;
	if (strcmp(word, "node") != 0)
		return diag_set(rd->d, -EINVAL, "%s:%u: unknown word '%s' (expected 'node')",
				rd->label, rd->line, word);
	r = node_id_parse(rd, &save, &n);
	if (r < 0)
		return r;
	while ((word = strtok_r(NULL, " \t", &save))) {
		bool is_cpus = strcmp(word, "cpus") == 0, is_mem = strcmp(word, "mem") == 0;
		const char *value;

		if (!is_cpus && !is_mem)
			return diag_set(rd->d, -EINVAL,
					"%s:%u: node %u: unknown word '%s' (expected cpus or mem)",
					rd->label, rd->line, n.id, word);
		if ((is_cpus && have_cpus) || (is_mem && have_mem))
			return diag_set(rd->d, -EINVAL, "%s:%u: node %u: %s given twice", rd->label,
					rd->line, n.id, word);
		value = strtok_r(NULL, " \t", &save);
		if (!value)
			return diag_set(rd->d, -EINVAL, "%s:%u: node %u: %s without a value",
					rd->label, rd->line, n.id, word);
		r = is_cpus ? node_cpus_parse(rd, &n, value) : node_mem_parse(rd, &n, value);
		if (r < 0)
			return r;
		have_cpus |= is_cpus;
		have_mem |= is_mem;
	}
	if (!have_cpus)
		return diag_set(rd->d, -EINVAL, "%s:%u: node %u: no cpus", rd->label, rd->line,
				n.id);
	rd->first_line[rd->t.n_nodes] = rd->line;
	rd->t.nodes[rd->t.n_nodes++] = n;
	return 0;
}

static int topo_node_cmp(const void *a, const void *b)
{
	const struct topo_node *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static int text_parse(struct topo_reader *rd, const char *text)
{
	const char *p = text;
	int r;

	while (*p) {
		size_t len = strcspn(p, "\n");
		char line[TOPOLOGY_LINE_MAX], *hash;

		rd->line++;
		if (len >= sizeof(line))
			return diag_set(rd->d, -EINVAL, "%s:%u: line too long", rd->label,
					rd->line);
		memcpy(line, p, len);
		line[len] = '\0';
		p += len + (p[len] == '\n');
		hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		line[strcspn(line, "\r")] = '\0';
		r = line_parse(rd, line);
		if (r < 0)
			return r;
	}
	if (rd->t.n_nodes == 0)
		return diag_set(rd->d, -EINVAL, "%s: no nodes", rd->label);
	return 0;
}

int topology_parse(const char *text, const char *label, struct topology *t, struct diag *d)
{
	struct topo_reader *rd;
	int r;

	/* ~20 KiB: built on the heap, copied out only on success */
	rd = calloc(1, sizeof(*rd));
	if (!rd)
		return diag_set(d, -ENOMEM, "%s: out of memory", label);
	rd->label = label;
	rd->d = d;
	if (sched_getaffinity(0, sizeof(rd->allowed), &rd->allowed) < 0) {
		r = diag_set(d, -errno, "%s: sched_getaffinity: %s", label, strerror(errno));
		goto out_free;
	}
	r = text_parse(rd, text);
	if (r < 0)
		goto out_free;
	qsort(rd->t.nodes, rd->t.n_nodes, sizeof(rd->t.nodes[0]), topo_node_cmp);
	rd->t.simulated = true;
	snprintf(rd->t.source, sizeof(rd->t.source), "file");
	*t = rd->t;
out_free:
	free(rd);
	return r;
}

/* The whole of @path in a NUL-terminated buffer (the caller frees it). */
static int file_read(const char *path, char **ret, struct diag *d)
{
	char *buf;
	size_t len = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return diag_set(d, -errno, "%s: %s", path, strerror(errno));
	buf = malloc(TOPOLOGY_FILE_MAX + 1);
	if (!buf) {
		r = diag_set(d, -ENOMEM, "%s: out of memory", path);
		goto out_close;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, TOPOLOGY_FILE_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = diag_set(d, -errno, "%s: %s", path, strerror(errno));
			goto out_free;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > TOPOLOGY_FILE_MAX) {
			r = diag_set(d, -EFBIG, "%s: larger than %d bytes", path,
				     TOPOLOGY_FILE_MAX);
			goto out_free;
		}
	}
	if (memchr(buf, '\0', len)) {
		r = diag_set(d, -EINVAL, "%s: not a text file (NUL byte)", path);
		goto out_free;
	}
	buf[len] = '\0';
	*ret = buf;
	close(fd);
	return 0;
out_free:
	free(buf);
out_close:
	close(fd);
	return r;
}

int topology_load(const char *path, struct topology *t, struct diag *d)
{
	char *text = NULL;
	int r;

	r = file_read(path, &text, d);
	if (r < 0)
		return r;
	r = topology_parse(text, path, t, d);
	free(text);
	return r;
}
