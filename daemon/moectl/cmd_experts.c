/* SPDX-License-Identifier: MIT */
/*
 * moectl experts: where a running moed's experts live, and changes to it.
 *
 *   moectl [--socket PATH] experts [--json]
 *   moectl [--socket PATH] experts replicate|move|drop LAYER EXPERT NODE [--wait]
 *
 * The first prints the current map (its epoch, per node the loaded experts'
 * bytes and the replica space in use, per expert its nodes, bytes, the
 * tokens it received and its load: tokens over the layer's mean), from the
 * daemon's status. The second asks moed for one change (root and moed's
 * user only) and prints the epoch that will hold it; --wait polls the
 * status until the map reaches that epoch.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moe.h>

#include "moectl.h"
#include "util/log.h"
#include "util/parse.h"

/* How long --wait waits for a change: a copy of the largest experts takes well under this. */
#define WAIT_LIMIT_S 120.0

static void experts_usage(FILE *out)
{
	fprintf(out, "usage: moectl [--socket PATH] experts [--json]\n"
		     "       moectl [--socket PATH] experts replicate|move|drop LAYER EXPERT NODE "
		     "[--wait]\n"
		     "\n"
		     "replicate: a copy more of the expert on NUMA node NODE (in that node's\n"
		     "           replica_budget); move: its primary copy to NODE; drop: its copy\n"
		     "           on NODE (never the last). Root and moed's user only.\n");
}

static json_int_t get_int(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

/* The store's map with each expert's tokens and load (tokens over the layer's mean) added. */
static json_t *map_with_load(json_t *status)
{
	json_t *store = json_object_get(status, "store");
	json_t *map = json_deep_copy(json_object_get(store, "map"));
	json_t *stats = json_object_get(status, "layers"), *layer;
	size_t l;

	if (!map)
		return NULL;
	json_object_set(map, "nodes", json_object_get(store, "nodes"));
	json_array_foreach(json_object_get(map, "layers"), l, layer)
	{
		const json_t *tpe = json_object_get(json_array_get(stats, l), "tokens_per_expert");
		json_t *experts = json_object_get(layer, "experts"), *ex;
		double sum = 0;
		size_t e, n = json_array_size(experts);

		json_array_foreach(experts, e, ex)
			sum += (double)json_integer_value(json_array_get(tpe, e));
		json_array_foreach(experts, e, ex)
		{
			json_int_t tokens = json_integer_value(json_array_get(tpe, e));

			json_object_set_new(ex, "tokens", json_integer(tokens));
			json_object_set_new(ex, "load",
					    json_real(sum > 0 ? (double)tokens * (double)n / sum : 0));
		}
	}
	return map;
}

static void print_map(const json_t *map)
{
	const json_t *node, *layer, *ex, *id;
	char b1[32];
	size_t i, j, k;

	printf("map epoch %lld\n", (long long)get_int(map, "epoch"));
	json_array_foreach(json_object_get(map, "nodes"), i, node)
		moectl_print_node(node);
	json_array_foreach(json_object_get(map, "layers"), i, layer)
	{
		if (!json_array_size(json_object_get(layer, "experts")))
			continue;
		printf("layer %lld\n  %6s  %-12s %10s %12s %6s\n", (long long)get_int(layer, "layer"),
		       "expert", "nodes", "bytes", "tokens", "load");
		json_array_foreach(json_object_get(layer, "experts"), j, ex)
		{
			char nodes[64] = "";
			size_t at = 0;

			json_array_foreach(json_object_get(ex, "nodes"), k, id)
				if (at < sizeof(nodes))
					at += (size_t)snprintf(nodes + at, sizeof(nodes) - at, "%s%lld",
							       k ? "," : "",
							       (long long)json_integer_value(id));
			printf("  %6lld  %-12s %10s %12lld %6.2f\n", (long long)get_int(ex, "expert"),
			       nodes, moectl_human_bytes((uint64_t)get_int(ex, "bytes"), b1, sizeof(b1)),
			       (long long)get_int(ex, "tokens"),
			       json_real_value(json_object_get(ex, "load")));
		}
	}
}

/* The serving daemon's status with its expert map, or NULL (logged). */
static json_t *status_get(const char *socket_path)
{
	json_t *root = moectl_status_get(socket_path);

	if (!root)
		return NULL;
	if (json_object_get(root, "load"))
		log_error("moed is still loading its experts (moectl status shows how far)"),
			json_decref(root), root = NULL;
	else if (!json_is_object(json_object_get(json_object_get(root, "store"), "map")))
		log_error("the daemon's status has no expert map"), json_decref(root), root = NULL;
	return root;
}

static int experts_show(const char *socket_path, bool as_json)
{
	json_t *status = status_get(socket_path), *map;

	if (!status)
		return 1;
	map = map_with_load(status);
	json_decref(status);
	if (!map)
		return log_error("out of memory"), 1;
	if (as_json) {
		char *text = json_dumps(map, JSON_COMPACT);

		if (text)
			printf("%s\n", text);
		free(text);
	} else {
		print_map(map);
	}
	json_decref(map);
	return 0;
}

/* Poll the status until its map reaches @epoch. */
static int wait_epoch(const char *socket_path, uint64_t epoch)
{
	const struct timespec pause = { .tv_nsec = 50 * 1000 * 1000 };
	double deadline = moectl_now_s() + WAIT_LIMIT_S;

	for (;;) {
		json_t *status = status_get(socket_path), *store, *failed;
		json_int_t now;
		bool made = true;
		size_t i;

		if (!status)
			return 1;
		store = json_object_get(status, "store");
		now = get_int(store, "epoch");
		json_array_foreach(json_object_get(store, "failed_epochs"), i, failed)
			made = made && (uint64_t)json_integer_value(failed) != epoch;
		json_decref(status);
		if ((uint64_t)now >= epoch && !made) {
			log_error("the change of epoch %llu failed when moed made it: see moed's log",
				  (unsigned long long)epoch);
			return 1;
		}
		if ((uint64_t)now >= epoch)
			return 0;
		if (moectl_now_s() > deadline) {
			log_error("the map is at epoch %lld after %.0f s, not %llu: see moed's log",
				  (long long)now, WAIT_LIMIT_S, (unsigned long long)epoch);
			return 1;
		}
		nanosleep(&pause, NULL);
	}
}

static int experts_change(const char *socket_path, int argc, char **argv)
{
	static const char *const ops[] = { "replicate", "move", "drop", NULL };
	static const enum moe_expert_change_op op_of[] = {
		MOE_EXPERT_CHANGE_REPLICATE, MOE_EXPERT_CHANGE_MOVE, MOE_EXPERT_CHANGE_DROP
	};
	uint32_t v[3];
	uint64_t epoch;
	char why[128], safe[4 * 128];
	bool wait = false;
	int op = -1, r;

	for (int i = 0; ops[i]; i++)
		if (strcmp(argv[0], ops[i]) == 0)
			op = i;
	if (argc == 5 && strcmp(argv[4], "--wait") == 0)
		wait = true;
	else if (argc != 4)
		return experts_usage(stderr), 2;
	for (int i = 0; i < 3; i++) {
		if (parse_u32(argv[1 + i], 0, UINT32_MAX, &v[i]) < 0) {
			log_error("'%s' is not a number (moectl experts --help)", argv[1 + i]);
			return 2;
		}
	}
	r = moe_daemon_expert_change(socket_path, op_of[op], v[0], v[1], v[2], &epoch, why,
				     sizeof(why));
	if (r < 0) {
		log_error("%s layer %u expert %u node %u refused: %s%s%s", ops[op], v[0], v[1], v[2],
			  moe_strerror(r), why[0] ? ": " : "", moectl_term_safe(why, safe, sizeof(safe)));
		return 1;
	}
	printf("%s layer %u expert %u node %u: queued, map epoch %llu\n", ops[op], v[0], v[1],
	       v[2], (unsigned long long)epoch);
	return wait ? wait_epoch(socket_path, epoch) : 0;
}

int cmd_experts(int argc, char **argv, const char *socket_path)
{
	if (argc >= 2 && strcmp(argv[1], "--help") == 0)
		return experts_usage(stdout), 0;
	if (argc == 1)
		return experts_show(socket_path, false);
	if (argc == 2 && strcmp(argv[1], "--json") == 0)
		return experts_show(socket_path, true);
	if (strcmp(argv[1], "replicate") == 0 || strcmp(argv[1], "move") == 0 ||
	    strcmp(argv[1], "drop") == 0)
		return experts_change(socket_path, argc - 1, argv + 1);
	experts_usage(stderr);
	return 2;
}
