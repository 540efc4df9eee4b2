/* SPDX-License-Identifier: MIT */
/*
 * moectl: the command-line tool of moed. This file picks the subcommand;
 * each lives in its own cmd_*.c. Exit status: 0 on success, 1 on a failure
 * the message explains, 2 on a usage error.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moe.h>

#include "moectl.h"
#include "router/router_config.h"
#include "util/log.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: moectl [--socket PATH] COMMAND [OPTIONS]\n"
		"\n"
		"commands:\n"
		"  status      what a running moed is doing (--json for scripts)\n"
		"  peers       the other hosts: state, traffic, round trips, failures\n"
		"  top         a live view: throughput, per-layer rates, expert load as bars\n"
		"              and a heat map (--batch for plain frames)\n"
		"  experts     where the experts live (NUMA nodes, replicas, load), and\n"
		"              replicate|move|drop to change it while moed serves\n"
		"  store drop  remove the expert store a stopped moed left in shared memory\n"
		"  reload      make moed read its configuration again (SIGHUP) and say what\n"
		"              changed\n"
		"  metrics     moed's figures in Prometheus' text format\n"
		"  config      the configuration moed has in force\n"
		"  workload    drive a running moed with batches through every layer\n"
		"  forward     run one batch through an MoE layer: in-process, or in the\n"
		"              moed at --socket PATH\n"
		"  gen-model   write a synthetic MoE model (and an input batch)\n"
		"\n"
		"--socket PATH: moed's control socket (status, top, experts, workload, store:\n"
		"default $MOED_SOCKET, then /run/moed/moed.sock).\n"
		"\n"
		"moectl COMMAND --help shows the options of a command.\n");
}

const char *moectl_term_safe(const char *s, char *buf, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	for (; *s && n + 5 <= size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c >= 0x20 && c < 0x7f) {
			buf[n++] = (char)c;
		} else {
			buf[n++] = '\\';
			buf[n++] = 'x';
			buf[n++] = hex[c >> 4];
			buf[n++] = hex[c & 0xf];
		}
	}
	buf[n] = '\0';
	return buf;
}

const char *moectl_human_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	unsigned u = 0;

	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
	return buf;
}

void moectl_print_node(const json_t *node)
{
	char b1[32], b2[32], b3[32];

	printf("node %lld: %lld CPUs, loaded experts %s, replicas %s of %s",
	       (long long)json_integer_value(json_object_get(node, "node")),
	       (long long)json_integer_value(json_object_get(node, "cpus")),
	       moectl_human_bytes((uint64_t)json_integer_value(json_object_get(node, "bytes")), b1,
				  sizeof(b1)),
	       moectl_human_bytes((uint64_t)json_integer_value(json_object_get(node, "replica_used")),
				  b2, sizeof(b2)),
	       moectl_human_bytes(
		       (uint64_t)json_integer_value(json_object_get(node, "replica_budget")), b3,
		       sizeof(b3)));
	if (json_object_get(node, "workers"))
		printf("; %lld workers, %.0f%% busy, %.0f expert tokens/s",
		       (long long)json_integer_value(json_object_get(node, "workers")),
		       100 * json_real_value(json_object_get(node, "busy")),
		       json_real_value(json_object_get(node, "tokens_per_s")));
	printf("\n");
}

double moectl_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

json_t *moectl_status_fetch(const char *socket_path, char *why, size_t why_size)
{
	json_error_t err;
	char *text = NULL, safe[4 * JSON_ERROR_TEXT_LENGTH + 1];
	json_t *root;
	int r = moe_daemon_status(socket_path, &text);

	if (r < 0) {
		snprintf(why, why_size, "cannot get the status of moed at %s: %s",
			 socket_path ? socket_path : "the default socket", moe_strerror(r));
		return NULL;
	}
	root = json_loads(text, 0, &err);
	free(text);
	/* jansson quotes the offending input in its message: that is the peer's text */
	if (!root)
		snprintf(why, why_size, "the daemon's status is not JSON: %s",
			 moectl_term_safe(err.text, safe, sizeof(safe)));
	return root;
}

json_t *moectl_status_get(const char *socket_path)
{
	char why[1024];
	json_t *root = moectl_status_fetch(socket_path, why, sizeof(why));

	if (!root)
		log_error("%s", why);
	return root;
}

int moectl_show_options(int argc, char **argv, const char *usage, bool *ret_json)
{
	*ret_json = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			*ret_json = true;
		} else if (strcmp(argv[i], "--help") == 0) {
			printf("usage: %s\n", usage);
			return 0;
		} else {
			log_error("unknown option %s (%s)", argv[i], usage);
			return 2;
		}
	}
	return -1;
}

int moectl_router_option(int argc, char **argv, int i, char *buf, unsigned size)
{
	struct router_config probe;
	const char *arg = argv[i], *eq;
	char key[64];
	size_t n;

	if (strncmp(arg, "--", 2) != 0)
		return 0;
	arg += 2;
	eq = strchr(arg, '=');
	n = eq ? (size_t)(eq - arg) : strlen(arg);
	if (n == 0 || n >= sizeof(key))
		return 0;
	for (size_t j = 0; j < n; j++)
		key[j] = arg[j] == '-' ? '_' : arg[j];
	key[n] = '\0';
	/* a router option is a key the router table knows */
	router_config_init(&probe);
	if (router_config_set(&probe, key, "", NULL) == -ENOENT)
		return 0;
	if (!eq && i + 1 >= argc) {
		log_error("option --%s needs a value", key);
		return -EINVAL;
	}
	n = (size_t)snprintf(buf, size, "%s=%s", key, eq ? eq + 1 : argv[i + 1]);
	if (n >= size) {
		log_error("option --%s: the value is too long", key);
		return -EINVAL;
	}
	return eq ? 1 : 2;
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL;

	log_set_program("moectl");
	if (argc >= 3 && strcmp(argv[1], "--socket") == 0) {
		socket_path = argv[2];
		argc -= 2;
		argv += 2;
	}
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "forward") == 0)
		return cmd_forward(argc - 1, argv + 1, socket_path);
	if (strcmp(argv[1], "status") == 0)
		return cmd_status(argc - 1, argv + 1, socket_path);
	if (strcmp(argv[1], "experts") == 0)
		return cmd_experts(argc - 1, argv + 1, socket_path);
	if (strcmp(argv[1], "peers") == 0)
		return cmd_peers(argc - 1, argv + 1, socket_path);
	if (strcmp(argv[1], "top") == 0)
		return cmd_top(argc - 1, argv + 1, socket_path);
	if (strcmp(argv[1], "store") == 0)
		return cmd_store(argc - 1, argv + 1, socket_path);
	if (strcmp(argv[1], "reload") == 0)
		return cmd_reload(argc - 1, argv + 1, socket_path);
	if (strcmp(argv[1], "metrics") == 0)
		return cmd_metrics(argc - 1, argv + 1, socket_path);
	if (strcmp(argv[1], "config") == 0)
		return cmd_config(argc - 1, argv + 1, socket_path);
	if (strcmp(argv[1], "workload") == 0)
		return cmd_workload(argc - 1, argv + 1, socket_path);
	if (strcmp(argv[1], "gen-model") == 0)
		return cmd_gen_model(argc - 1, argv + 1);
	log_error("unknown command '%s'", argv[1]);
	usage(stderr);
	return 2;
}
