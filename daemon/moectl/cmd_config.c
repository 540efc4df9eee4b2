/* SPDX-License-Identifier: MIT */
/*
 * moectl config: the configuration a running moed has in force.
 *
 *   moectl [--socket PATH] config [--json] [--changed]
 *
 * Every setting as "key = value", in the order of moed.conf, each that
 * changes on reload marked so; --changed shows only those that differ from
 * the default. moed shows its configuration to root and to its own user
 * only (paths and addresses are the operator's). --json prints the status's
 * "config" array: [{"key", "value", "default", "live"}].
 * Exit status: 0, 1 when moed cannot be asked or does not show it, 2 for a
 * bad command line.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "moectl.h"
#include "util/log.h"

static const char usage[] = "usage: moectl [--socket PATH] config [--json] [--changed]\n";

int cmd_config(int argc, char **argv, const char *socket_path)
{
	bool json = false, changed = false;
	json_t *root, *cfg, *row;
	char key[96], value[8192];
	size_t i;

	for (int a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--json") == 0) {
			json = true;
		} else if (strcmp(argv[a], "--changed") == 0) {
			changed = true;
		} else if (strcmp(argv[a], "--help") == 0) {
			fputs(usage, stdout);
			return 0;
		} else {
			fputs(usage, stderr);
			return 2;
		}
	}
	root = moectl_status_get(socket_path);
	if (!root)
		return 1;
	cfg = json_object_get(root, "config");
	if (!json_is_array(cfg)) {
		log_error("moed shows its configuration to root and its own user only");
		json_decref(root);
		return 1;
	}
	if (json) {
		json_dumpf(cfg, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(root);
		return 0;
	}
	json_array_foreach(cfg, i, row) {
		const char *k = json_string_value(json_object_get(row, "key"));
		const char *v = json_string_value(json_object_get(row, "value"));
		const char *d = json_string_value(json_object_get(row, "default"));

		if (!k || !v || (changed && d && strcmp(v, d) == 0))
			continue;
		printf("%s = %s%s\n", moectl_term_safe(k, key, sizeof(key)),
		       moectl_term_safe(v, value, sizeof(value)),
		       json_is_true(json_object_get(row, "live")) ? "    # changes on reload" : "");
	}
	json_decref(root);
	return 0;
}
